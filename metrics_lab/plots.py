"""Plots for the notebooks, with matplotlib's object-oriented API only.

Every function draws on the ``ax`` it is given (or on a new :class:`~matplotlib.figure.Figure`
made without :mod:`matplotlib.pyplot`, so no global figure is left behind) and returns that
Axes, titled and labelled with units, so a learner can keep drawing on it::

    fig, ax = plt.subplots(figsize=(10, 4))
    plot_series(frame, ax=ax, title="CPU load", unit="%")
    mark_anomalies(frame[frame["anomaly"]], ax=ax)

- :func:`plot_series`: one line per key against UTC time.
- :func:`mark_anomalies`: red markers on points flagged as unusual.
- :func:`legend_outside`: the legend to the right of the plot, where it covers no data.

This module and :mod:`metrics_lab.dataframes` are the only ones that import matplotlib or pandas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from metrics_lab.extras import missing_extra

try:
    import matplotlib.dates as mdates
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.legend import Legend
except ModuleNotFoundError as exc:  # the data extra is not installed
    raise missing_extra(__name__, "data", "pandas matplotlib", exc) from None

from metrics_lab.dataframes import to_frame
from metrics_lab.storage import GetResult

__all__ = ["legend_outside", "mark_anomalies", "plot_series"]


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    return Figure(figsize=figsize, layout="constrained").add_subplot()


def _tidy(data: GetResult | pd.DataFrame) -> pd.DataFrame:
    return to_frame(data) if isinstance(data, Mapping) else data


def plot_series(
    data: GetResult | pd.DataFrame,
    *,
    ax: Axes | None = None,
    keys: Sequence[str] | None = None,
    title: str = "Metrics over time",
    ylabel: str = "value",
    unit: str | None = None,
) -> Axes:
    """Plot each key's values against time (UTC), one labelled line per key.

    ``data`` is a ``get`` result or a tidy frame (:func:`metrics_lab.dataframes.to_frame`);
    ``keys`` picks and orders the keys to draw (all by default). The y label reads
    ``"<ylabel> (<unit>)"`` when a unit is given; the x label names the first and last time
    drawn, so the dates are never left to guess. The legend sits right of the plot.
    Returns the Axes.
    """
    ax = _axes(ax, (10, 4))
    tidy = _tidy(data)
    chosen = list(keys) if keys is not None else sorted(tidy["key"].unique())
    drawn = tidy[tidy["key"].isin(chosen)]
    for key in chosen:
        rows = drawn[drawn["key"] == key]
        ax.plot(rows["time"].to_numpy(), rows["value"].to_numpy(), label=key, linewidth=1)
    ax.set_title(title)
    ax.set_xlabel(_time_label(drawn["time"]))
    ax.set_ylabel(f"{ylabel} ({unit})" if unit else ylabel)
    _format_time_axis(ax)
    if chosen:
        legend_outside(ax, title="key")
    ax.grid(True, alpha=0.3)
    return ax


def _time_label(times: pd.Series) -> str:
    if times.empty:
        return "time (UTC)"
    first, last = times.min(), times.max()
    return f"time (UTC), {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M}"


def _format_time_axis(ax: Axes) -> None:
    # Ticks give the hour, and the date (ISO) where a day begins; no offset text in the corner,
    # which names one date for a range that may span two. matplotlib.dates is unannotated here.
    locator = mdates.AutoDateLocator(tz="UTC")  # type: ignore[no-untyped-call]
    formatter = mdates.ConciseDateFormatter(  # type: ignore[no-untyped-call]
        locator,
        tz="UTC",
        zero_formats=["", "%Y", "%Y-%m", "%Y-%m-%d", "%H:%M", "%H:%M:%S"],
        show_offset=False,
    )
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(formatter)


def legend_outside(ax: Axes, *, title: str | None = None) -> Legend:
    """Draw ``ax``'s legend to the right of the plot, where it cannot cover any data.

    Call it again after adding lines to update it. A figure made with
    ``layout="constrained"`` (as ``plot_series`` makes its own) keeps room for it.
    """
    return ax.legend(
        title=title,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize="small",
        borderaxespad=0,
    )


def mark_anomalies(points: pd.DataFrame, *, ax: Axes | None = None, label: str = "anomaly") -> Axes:
    """Circle the given points (rows with ``time`` and ``value``) in red on ``ax``.

    Pass the flagged rows of a tidy frame, e.g. ``frame[frame["anomaly"]]``; the legend gets
    one ``label`` entry even when there are none to mark. Returns the Axes.
    """
    ax = _axes(ax, (10, 4))
    ax.scatter(
        points["time"].to_numpy(),
        points["value"].to_numpy(),
        s=60,
        facecolors="none",
        edgecolors="red",
        linewidths=1.5,
        label=f"{label} ({len(points)})",
        zorder=3,
    )
    legend_outside(ax)
    return ax
