"""Metrics as pandas DataFrames: what ``get`` returned, in shapes that analysis code expects.

- :func:`to_frame`: a ``get`` result as a tidy frame, one row per point, with the columns
  ``key`` (str), ``timestamp`` (int64 Unix seconds), ``time`` (UTC datetime) and ``value``
  (float64), sorted by key and then by timestamp.
- :func:`to_wide`: one column per key on a UTC :class:`~pandas.DatetimeIndex`, for
  resampling, rolling windows and plotting.
- :func:`to_points`: the way back, a tidy or wide frame as ``(key, value, timestamp)`` tuples
  for :meth:`metrics_lab.Client.put_many`.
- :func:`wire_frame`: a :class:`~metrics_lab.wire.WireLog` as a table of what crossed the wire
  and what it meant, decoded by :mod:`metrics_lab.protocol`'s own readers.

This is the only module of the package that imports pandas; ``import metrics_lab`` does not.

>>> frame = to_frame({"cpu": [(1700000060, 0.5), (1700000000, 0.25)]})
>>> frame[["key", "timestamp", "value"]]
   key   timestamp  value
0  cpu  1700000000   0.25
1  cpu  1700000060   0.50
>>> to_points(frame)
[('cpu', 0.25, 1700000000), ('cpu', 0.5, 1700000060)]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from metrics_lab.extras import missing_extra

try:
    import numpy as np
    import pandas as pd
except ModuleNotFoundError as exc:  # the data extra is not installed
    raise missing_extra(__name__, "data", "pandas matplotlib", exc) from None

from metrics_lab.protocol import (
    ALL_KEYS,
    NEED_DATA,
    Answer,
    AnswerReader,
    LineReader,
    ProtocolError,
    PutRequest,
    Request,
    WrongCommandError,
    parse_get_answer,
    parse_request,
)
from metrics_lab.storage import GetResult
from metrics_lab.wire import WireEvent

__all__ = ["COLUMNS", "TIME_DTYPE", "to_frame", "to_points", "to_wide", "wire_frame"]

COLUMNS = ("key", "timestamp", "time", "value")
"""The columns of a tidy frame, in order."""

TIME_DTYPE = "datetime64[s, UTC]"
"""The dtype of the ``time`` column and of the wide index: whole seconds, like the protocol,
which also keeps every 64-bit timestamp in range (nanoseconds would overflow after 2262)."""


def to_frame(result: GetResult) -> pd.DataFrame:
    """Turn a ``get`` result into a tidy frame, one row per point.

    ``result`` is a :data:`~metrics_lab.storage.GetResult`. Columns are :data:`COLUMNS`; rows
    are sorted by key, then timestamp, with a fresh ``RangeIndex``. An empty result gives an
    empty frame with the same columns and dtypes.
    """
    keys: list[str] = []
    timestamps: list[int] = []
    values: list[float] = []
    for key, series in result.items():
        keys.extend([key] * len(series))
        for timestamp, value in series:
            timestamps.append(timestamp)
            values.append(value)
    stamps = np.array(timestamps, dtype="int64")
    frame = pd.DataFrame(
        {
            "key": pd.Series(keys, dtype=str),
            "timestamp": stamps,
            "time": _utc_times(stamps),
            "value": np.array(values, dtype="float64"),
        }
    )
    return frame.sort_values(["key", "timestamp"], kind="stable", ignore_index=True)


def _utc_times(timestamps: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(timestamps.astype("datetime64[s]")).tz_localize("UTC")


def to_wide(data: GetResult | pd.DataFrame) -> pd.DataFrame:
    """One column per key (sorted), one row per time on a UTC ``DatetimeIndex`` named ``time``.

    ``data`` is a ``get`` result or a tidy frame from :func:`to_frame`. Where a key has no
    point at a time that another key has, the cell is ``NaN``.
    """
    tidy = to_frame(data) if isinstance(data, Mapping) else data
    wide = tidy.pivot_table(index="time", columns="key", values="value", aggfunc="last")
    wide = wide.reindex(columns=sorted(tidy["key"].unique()))
    wide.columns.name = "key"
    wide.index = pd.DatetimeIndex(wide.index, name="time").astype(TIME_DTYPE)
    return wide.astype("float64")


def to_points(frame: pd.DataFrame) -> list[tuple[str, float, int]]:
    """Turn a tidy or a wide frame back into ``(key, value, timestamp)`` points.

    A tidy frame needs ``key`` and ``value`` columns and either ``timestamp`` (Unix seconds)
    or ``time`` (datetimes; naive ones are read as UTC). A wide frame is one with a
    ``DatetimeIndex`` and one column per key; its ``NaN`` cells are skipped. Raises
    :class:`ValueError` for any other shape, and for missing or non-finite values in a tidy
    frame, since the protocol cannot carry them.
    """
    if {"key", "value"} <= set(frame.columns):
        tidy = frame
    elif isinstance(frame.index, pd.DatetimeIndex):
        tidy = (
            frame.rename_axis(index="time", columns=None)
            .reset_index()
            .melt(id_vars="time", var_name="key", value_name="value")
            .dropna(subset=["value"])
        )
    else:
        raise ValueError(
            "to_points needs a tidy frame (columns key, value and timestamp or time) "
            "or a wide frame (a DatetimeIndex and one column per key)"
        )
    if "timestamp" in tidy.columns:
        timestamps = tidy["timestamp"].astype("int64")
    elif "time" in tidy.columns:
        timestamps = _unix_seconds(tidy["time"])
    else:
        raise ValueError("a tidy frame needs a 'timestamp' or a 'time' column")
    values = tidy["value"].astype("float64")
    if not np.isfinite(values.to_numpy()).all():
        raise ValueError("the frame has missing or non-finite values; drop or fill them first")
    return list(
        zip(
            tidy["key"].astype(str).tolist(),
            values.tolist(),
            timestamps.tolist(),
            strict=True,
        )
    )


def _unix_seconds(times: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(times)
    if stamps.dt.tz is None:
        stamps = stamps.dt.tz_localize("UTC")
    # Floor division of whole seconds since the epoch, whatever the datetime resolution.
    return (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)


# --- the wire, readably --------------------------------------------------------------------


def wire_frame(log: Iterable[WireEvent], *, width: int = 72) -> pd.DataFrame:
    """Show a wire log as a table: ``direction``, ``bytes``, ``size`` and ``meaning``.

    ``bytes`` is the chunk with ``\\n`` and other control bytes escaped, cut to ``width``
    characters. ``meaning`` is what the protocol module makes of it: the sent side goes
    through :class:`~metrics_lab.protocol.LineReader` and :func:`parse_request`, the
    received side through :class:`~metrics_lab.protocol.AnswerReader`, both fed chunk by
    chunk as the client saw them, so a request or answer split over chunks is decoded where
    it completes. Answers are matched with the requests they answer, in order.

    ``log`` is a :class:`~metrics_lab.wire.WireLog` or any iterable of its events.
    """
    lines = LineReader()
    answers = AnswerReader()
    # Sent requests whose answers have not come yet; None stands for a wrong command.
    waiting: deque[Request | None] = deque()
    rows = []
    for event in log:
        if event.direction == "sent":
            meaning = _sent_meaning(lines.receive_data(event.data), lines.pending, waiting)
        else:
            answers.receive_data(event.data)
            meaning = _received_meaning(answers, waiting)
        text = event.text
        if len(text) > width:
            text = text[: width - 1] + "…"
        rows.append((event.direction, text, len(event.data), meaning))
    return pd.DataFrame(rows, columns=["direction", "bytes", "size", "meaning"]).astype(
        {"direction": str, "bytes": str, "size": "int64", "meaning": str}
    )


def _sent_meaning(lines: list[bytes], pending: int, waiting: deque[Request | None]) -> str:
    parts = []
    for line in lines:
        try:
            request = parse_request(line)
        except WrongCommandError as exc:
            parts.append(f"not a valid request ({exc}): the server will answer error")
            waiting.append(None)
            continue
        if request is None:
            parts.append("an empty line: not a request, no answer")
            continue
        waiting.append(request)
        parts.append(_describe_request(request))
    if pending:
        parts.append(f"{pending} bytes of an unfinished line (the server buffers them)")
    return "; ".join(parts) if parts else "nothing"


def _describe_request(request: Request) -> str:
    if isinstance(request, PutRequest):
        return f"put: store {request.key} = {request.value!r} at {request.timestamp}"
    if request.key == ALL_KEYS:
        return "get: every key's points"
    return f"get: the points of {request.key}"


def _received_meaning(answers: AnswerReader, waiting: deque[Request | None]) -> str:
    parts = []
    while True:
        try:
            answer = answers.next_answer()
        except ProtocolError as exc:
            parts.append(f"not a valid answer: {exc}")
            break
        if answer is NEED_DATA:
            break
        parts.append(_describe_answer(answer, waiting.popleft() if waiting else None))
    if answers.buffered:
        parts.append(f"{answers.buffered} bytes of an answer so far (waiting for the end)")
    return "; ".join(parts) if parts else "nothing"


def _describe_answer(answer: Answer, request: Request | None) -> str:
    if answer.status == "error":
        return f"error: {' '.join(answer.lines) or 'no detail'}"
    if isinstance(request, PutRequest):
        return "ok: stored" if not answer.lines else f"ok with {len(answer.lines)} stray lines"
    try:
        points = parse_get_answer(answer)
    except ProtocolError as exc:
        return f"ok, but garbled: {exc}"
    count = sum(len(series) for series in points.values())
    if not count:
        return "ok: no points"
    plural = "s" if len(points) != 1 else ""
    return f"ok: {count} point{'s' if count != 1 else ''} of {len(points)} key{plural}"
