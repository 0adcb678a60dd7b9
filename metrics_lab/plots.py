"""Plots for the notebooks, with matplotlib's object-oriented API only.

Every function draws on the ``ax`` it is given (or on a new :class:`~matplotlib.figure.Figure`
made without :mod:`matplotlib.pyplot`, so no global figure is left behind) and returns that
Axes, titled and labelled with units, so a learner can keep drawing on it::

    fig, ax = plt.subplots(figsize=(10, 4))
    plot_series(frame, ax=ax, title="CPU load", unit="%")
    mark_anomalies(frame[frame["anomaly"]], ax=ax)

- :func:`plot_series`: one line per key against UTC time.
- :func:`mark_anomalies`: red markers on points flagged as unusual.
- :func:`plot_timeline`: horizontal bars for spans of time (which request ran when).

This module and :mod:`metrics_lab.frames` are the only ones that import matplotlib or pandas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.dates as mdates
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from metrics_lab.frames import GetResult, to_frame

__all__ = ["Span", "mark_anomalies", "plot_series", "plot_timeline"]

Span = tuple[str, float, float]
"""One bar of a timeline: ``(lane, start, end)``, times in seconds from any common origin."""


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

    ``data`` is a ``get`` result or a tidy frame (:func:`metrics_lab.frames.to_frame`);
    ``keys`` picks and orders the keys to draw (all by default). The y label reads
    ``"<ylabel> (<unit>)"`` when a unit is given. Returns the Axes.
    """
    ax = _axes(ax, (10, 4))
    tidy = _tidy(data)
    chosen = list(keys) if keys is not None else sorted(tidy["key"].unique())
    for key in chosen:
        rows = tidy[tidy["key"] == key]
        ax.plot(rows["time"].to_numpy(), rows["value"].to_numpy(), label=key, linewidth=1)
    ax.set_title(title)
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel(f"{ylabel} ({unit})" if unit else ylabel)
    _format_time_axis(ax)
    if chosen:
        ax.legend(title="key", loc="best", fontsize="small")
    ax.grid(True, alpha=0.3)
    return ax


def _format_time_axis(ax: Axes) -> None:
    # matplotlib.dates ships without annotations on these constructors.
    locator = mdates.AutoDateLocator(tz="UTC")  # type: ignore[no-untyped-call]
    formatter = mdates.ConciseDateFormatter(locator, tz="UTC")  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(formatter)


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
    ax.legend(loc="best", fontsize="small")
    return ax


def plot_timeline(
    spans: Sequence[Span],
    *,
    ax: Axes | None = None,
    title: str = "Requests over time",
    unit: str = "ms",
    scale: float = 1000.0,
) -> Axes:
    """Draw each ``(lane, start, end)`` span as a bar in its lane, to show what overlapped.

    Times are seconds; they are shown relative to the earliest start, multiplied by
    ``scale`` and labelled with ``unit`` (milliseconds by default). Lanes appear top to
    bottom in the order they first occur. Returns the Axes.
    """
    ax = _axes(ax, (10, 3))
    lanes: dict[str, int] = {}
    for lane, _, _ in spans:
        lanes.setdefault(lane, len(lanes))
    origin = min((start for _, start, _ in spans), default=0.0)
    colors = [f"C{index % 10}" for index in range(len(lanes))]
    for lane, start, end in spans:
        row = lanes[lane]
        ax.broken_barh(
            [((start - origin) * scale, max(end - start, 0.0) * scale)],
            (row - 0.4, 0.8),
            facecolors=colors[row],
            edgecolor="black",
            linewidth=0.5,
        )
    ax.set_yticks(range(len(lanes)), list(lanes))
    ax.set_ylim(len(lanes) - 0.5, -0.5)  # the first lane on top
    ax.set_xlim(left=0)
    ax.set_title(title)
    ax.set_xlabel(f"time since the first start ({unit})")
    ax.set_ylabel("who")
    ax.grid(True, axis="x", alpha=0.3)
    return ax
