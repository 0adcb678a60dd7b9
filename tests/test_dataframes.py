"""metrics_lab.dataframes: get results <-> DataFrames, and the wire log as a table."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from metrics_lab import Client, WireLog, serve_in_background
from metrics_lab.dataframes import COLUMNS, TIME_DTYPE, to_frame, to_points, to_wide, wire_frame
from metrics_lab.synthetic import fleet
from metrics_lab.wire import WireEvent

TIMEOUT = 5.0
RESULT = {
    "web1.cpu": [(1_700_000_060, 41.5), (1_700_000_000, 40.0)],
    "db1.cpu": [(1_700_000_000, 12.25)],
}


def test_to_frame_is_tidy_typed_and_sorted():
    frame = to_frame(RESULT)
    assert tuple(frame.columns) == COLUMNS
    assert frame["key"].tolist() == ["db1.cpu", "web1.cpu", "web1.cpu"]
    assert frame["timestamp"].tolist() == [1_700_000_000, 1_700_000_000, 1_700_000_060]
    assert frame["value"].tolist() == [12.25, 40.0, 41.5]
    assert frame["timestamp"].dtype == np.dtype("int64")
    assert frame["value"].dtype == np.dtype("float64")
    assert str(frame["time"].dtype) == TIME_DTYPE
    assert pd.api.types.is_string_dtype(frame["key"])
    assert frame["time"].iloc[2] == pd.Timestamp("2023-11-14 22:14:20", tz="UTC")
    assert frame.index.tolist() == [0, 1, 2]


def test_empty_result_gives_an_empty_frame_with_the_same_dtypes():
    empty, full = to_frame({}), to_frame(RESULT)
    assert len(empty) == 0
    assert empty.dtypes.to_dict() == full.dtypes.to_dict()
    wide = to_wide({})
    assert wide.shape == (0, 0)
    assert str(wide.index.dtype) == TIME_DTYPE
    assert to_points(empty) == []


def test_to_wide_has_one_column_per_key_and_nan_for_gaps():
    wide = to_wide(RESULT)
    assert list(wide.columns) == ["db1.cpu", "web1.cpu"]
    assert isinstance(wide.index, pd.DatetimeIndex)
    assert str(wide.index.tz) == "UTC"
    assert wide.index.name == "time"
    assert wide["web1.cpu"].tolist() == [40.0, 41.5]
    assert wide["db1.cpu"].iloc[0] == 12.25
    assert np.isnan(wide["db1.cpu"].iloc[1])
    pd.testing.assert_frame_equal(wide, to_wide(to_frame(RESULT)))


@pytest.mark.parametrize("shape", ["tidy", "tidy by time", "wide"])
def test_to_points_reverses_to_frame(shape):
    frame = to_frame(RESULT)
    if shape == "tidy by time":
        frame = frame.drop(columns="timestamp")
    elif shape == "wide":
        frame = to_wide(frame)
    points = to_points(frame)
    expected = [(key, value, ts) for key, series in RESULT.items() for ts, value in series]
    assert sorted(points) == sorted(expected)
    assert all(type(ts) is int and type(value) is float for _, value, ts in points)


def test_to_points_reads_naive_times_as_utc():
    frame = pd.DataFrame(
        {"key": ["a"], "time": [pd.Timestamp("2023-11-14 22:13:20")], "value": [1.0]}
    )
    assert to_points(frame) == [("a", 1.0, 1_700_000_000)]


def test_to_points_refuses_what_the_wire_cannot_carry():
    with pytest.raises(ValueError, match="non-finite"):
        to_points(pd.DataFrame({"key": ["a"], "timestamp": [1], "value": [float("nan")]}))
    with pytest.raises(ValueError, match="tidy frame"):
        to_points(pd.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match="'timestamp' or a 'time'"):
        to_points(pd.DataFrame({"key": ["a"], "value": [1.0]}))


def test_a_round_trip_through_a_real_server():
    points = fleet(("web1", "db1"), points=30)
    with serve_in_background() as server, Client(*server.address, timeout=TIMEOUT) as client:
        client.put_many(points)
        frame = to_frame(client.get("*"))
        means = to_wide(frame).resample("5min").mean().add_suffix(".5min")
        client.put_many(to_points(means))
        stored_means = client.get("web1.cpu.5min")["web1.cpu.5min"]
    assert len(frame) == len(points)
    assert sorted(to_points(frame)) == sorted(points)
    # 30 points a minute apart from 22:13:20 fall into seven 5-minute bins, 22:10 to 22:40.
    assert [ts for ts, _ in stored_means] == [1_699_999_800 + 300 * i for i in range(7)]
    first_two = [value for _, value, _ in points[:2]]
    assert stored_means[0][1] == pytest.approx(sum(first_two) / 2)


def _events(*pairs: tuple[str, bytes]) -> list[WireEvent]:
    log = WireLog()
    for direction, data in pairs:
        log.record(direction, data)  # type: ignore[arg-type]
    return log.events


def test_wire_frame_decodes_requests_and_matches_answers():
    events = _events(
        ("sent", b"put cpu 0.5 1\n"),
        ("received", b"ok\n\n"),
        ("sent", b"get *\n"),
        ("received", b"ok\ncpu 0.5 1\n\n"),
        ("sent", b"got cpu\n"),
        ("received", b"error\nwrong command\n\n"),
        ("sent", b"get nothing\n"),
        ("received", b"ok\n\n"),
    )
    table = wire_frame(events)
    assert list(table.columns) == ["direction", "bytes", "size", "meaning"]
    assert table["direction"].tolist() == ["sent", "received"] * 4
    assert table["bytes"].tolist()[:2] == ["put cpu 0.5 1\\n", "ok\\n\\n"]
    assert table["size"].tolist()[:2] == [14, 4]
    meanings = table["meaning"].tolist()
    assert meanings[0] == "put: store cpu = 0.5 at 1"
    assert meanings[1] == "ok: stored"
    assert meanings[2] == "get: every key's points"
    assert meanings[3] == "ok: 1 point of 1 key"
    assert meanings[4].startswith("not a valid request (unknown command b'got')")
    assert meanings[5] == "error: wrong command"
    assert meanings[7] == "ok: no points"


def test_wire_frame_follows_messages_split_and_joined_across_chunks():
    events = _events(
        ("sent", b"put a 1 1\nput a"),
        ("sent", b" 2 2\n\n"),
        ("received", b"ok\n\nok"),
        ("received", b"\n\n"),
    )
    meanings = wire_frame(events)["meaning"].tolist()
    assert (
        meanings[0]
        == "put: store a = 1.0 at 1; 5 bytes of an unfinished line (the server buffers them)"
    )
    assert meanings[1] == "put: store a = 2.0 at 2; an empty line: not a request, no answer"
    assert meanings[2] == "ok: stored; 2 bytes of an answer so far (waiting for the end)"
    assert meanings[3] == "ok: stored"


def test_wire_frame_reports_garbage_and_cuts_long_chunks():
    table = wire_frame(
        _events(("sent", b"get " + b"k" * 200 + b"\n"), ("received", b"HTTP/1.1 400\r\n\r\n")),
        width=20,
    )
    assert len(table["bytes"].iloc[0]) == 20
    assert table["bytes"].iloc[0].endswith("…")
    assert table["meaning"].iloc[1].startswith("not a valid answer")


def test_wire_frame_of_a_real_client():
    wire = WireLog()
    with serve_in_background() as server, Client(*server.address, timeout=TIMEOUT, wire=wire) as c:
        c.put("cpu", 301, 3)
        c.get("cpu")
    table = wire_frame(wire)
    assert table["bytes"].tolist() == [
        "put cpu 301 3\\n",
        "ok\\n\\n",
        "get cpu\\n",
        "ok\\ncpu 301.0 3\\n\\n",
    ]
    assert table["meaning"].tolist()[-1] == "ok: 1 point of 1 key"


def test_importing_metrics_lab_does_not_import_pandas_or_matplotlib():
    code = (
        "import sys, metrics_lab, metrics_lab.cli, metrics_lab.synthetic\n"
        "heavy = sorted(m for m in ('pandas', 'matplotlib', 'numpy') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert run.stdout.strip() == ""
