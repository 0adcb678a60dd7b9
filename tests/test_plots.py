"""metrics_lab.plots: labelled Axes, drawn with the object-oriented API on the Agg backend."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from metrics_lab.dataframes import to_frame
from metrics_lab.plots import mark_anomalies, plot_series
from metrics_lab.synthetic import cpu_load

matplotlib.use("Agg")  # no display needed; chosen before pyplot is imported
import matplotlib.pyplot as plt  # only to check that no pyplot figure is left behind

RESULT = {
    "web1.cpu": [(ts, value) for _, value, ts in cpu_load("web1.cpu", points=60, seed=1)],
    "web2.cpu": [(ts, value) for _, value, ts in cpu_load("web2.cpu", points=60, seed=2)],
}


def _renders(figure: Figure) -> None:
    """Draw the figure to PNG bytes: layout or date-formatting bugs only show up here."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    assert buffer.getvalue().startswith(b"\x89PNG")


def test_plot_series_draws_one_labelled_line_per_key():
    figure = Figure()
    ax = figure.add_subplot()
    returned = plot_series(RESULT, ax=ax, title="CPU load", ylabel="load", unit="%")
    assert returned is ax
    assert [line.get_label() for line in ax.get_lines()] == ["web1.cpu", "web2.cpu"]
    assert [np.size(line.get_xdata()) for line in ax.get_lines()] == [60, 60]
    assert ax.get_title() == "CPU load"
    assert ax.get_ylabel() == "load (%)"
    # cpu_load starts at 1700000000, 2023-11-14 22:13:20 UTC, one point a minute.
    assert ax.get_xlabel() == "time (UTC), 2023-11-14 22:13 to 2023-11-14 23:12"
    legend = ax.get_legend()
    assert legend is not None
    assert [text.get_text() for text in legend.get_texts()] == ["web1.cpu", "web2.cpu"]
    _is_right_of_the_data(ax)
    _renders(figure)


def _is_right_of_the_data(ax) -> None:
    figure = ax.get_figure()
    assert isinstance(figure, Figure)
    _renders(figure)  # lays the figure out; window extents are in pixels after that
    legend = ax.get_legend()
    assert legend is not None
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1


def test_date_ticks_name_the_dates_and_leave_no_corner_offset():
    ax = plot_series(RESULT)
    figure = ax.get_figure()
    assert isinstance(figure, Figure)
    _renders(figure)
    labels = [tick.get_text() for tick in ax.get_xticklabels()]
    assert ax.xaxis.get_major_formatter().get_offset() == ""
    assert all(label.count(":") == 1 or label.startswith("2023-11-") for label in labels), labels


def test_plot_series_takes_a_frame_and_a_choice_of_keys():
    ax = plot_series(to_frame(RESULT), keys=["web2.cpu"])
    assert [line.get_label() for line in ax.get_lines()] == ["web2.cpu"]
    assert ax.get_ylabel() == "value"


def test_plotting_leaves_no_pyplot_figure_behind():
    before = plt.get_fignums()
    ax = plot_series(RESULT)
    mark_anomalies(to_frame(RESULT).head(3), ax=ax)
    assert plt.get_fignums() == before
    figure = ax.get_figure()
    assert isinstance(figure, Figure)
    _renders(figure)


def test_plot_series_of_nothing_still_has_labels():
    ax = plot_series({}, title="nothing yet")
    assert ax.get_lines() == []
    assert ax.get_title() == "nothing yet"


def test_mark_anomalies_circles_the_given_points():
    frame = to_frame(RESULT)
    ax = plot_series(frame)
    mark_anomalies(frame.iloc[[5, 70]], ax=ax, label="spike")
    [markers] = ax.collections
    assert np.shape(markers.get_offsets()) == (2, 2)
    legend = ax.get_legend()
    assert legend is not None
    assert "spike (2)" in [text.get_text() for text in legend.get_texts()]
    _is_right_of_the_data(ax)
