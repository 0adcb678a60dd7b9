"""The wire format, and nothing else: bytes in, objects out, no I/O.

This package is the only place that knows what the metrics protocol looks like on the wire
(the full text is ``docs/PROTOCOL.md``). The server and every client feed it bytes and get
typed objects back, or hand it objects and get bytes to send; none of them formats or parses
protocol text on its own. It is split by role, and every public name is importable from here
(but wire_format's two grammar regexes, ``FLOAT_LITERAL`` and ``INT_LITERAL``):

- :mod:`~metrics_lab.protocol.wire_format`: what both sides share: the constants, the
  request types (:class:`PutRequest`, :class:`GetRequest`) and :class:`Answer`.
- :mod:`~metrics_lab.protocol.server_side`: request lines in (:class:`LineReader`,
  :func:`parse_request`, :class:`SimpleParser`), answer lines out
  (:func:`encode_series_lines`).
- :mod:`~metrics_lab.protocol.client_side`: requests out (:func:`encode_put`,
  :func:`encode_get`), answers in (:class:`AnswerReader`, :func:`parse_get_answer`), and
  what goes wrong on that side: :class:`ProtocolError` and its subclasses, which each client
  turns into the matching :class:`~metrics_lab.errors.ClientError` where it does I/O.

The point's shape (:class:`~metrics_lab.storage.PointBatch`) and what a get returns
(:data:`~metrics_lab.storage.GetResult`) belong to the storage contract, beside the store.

Server side::

    reader = LineReader()
    for line in reader.receive_data(b"put cpu 0.5 1\\nget cpu\\n"):
        request = parse_request(line)        # PutRequest(...), GetRequest(...), None or raises

Client side::

    wire = encode_put("cpu", 0.5, 1)         # b"put cpu 0.5 1\\n"
    answers = AnswerReader()
    answers.receive_data(b"ok\\n\\n")
    answers.next_answer()                    # Answer(status='ok', lines=())

>>> parse_request(b"put  palm.cpu 10.5 1501864247\\r")
PutRequest(key='palm.cpu', value=10.5, timestamp=1501864247)
>>> encode_points_answer([("palm.cpu", [1501864247], [10.5])])
b'ok\\npalm.cpu 10.5 1501864247\\n\\n'
"""

from metrics_lab.protocol.client_side import (
    NEED_DATA,
    AnswerReader,
    MalformedAnswerError,
    NeedData,
    ProtocolError,
    RefusedRequestError,
    StreamEndedError,
    UnsendableRequestError,
    check_put_answer,
    encode_get,
    encode_put,
    encode_puts,
    parse_get_answer,
)
from metrics_lab.protocol.server_side import (
    Item,
    LineReader,
    SimpleParser,
    WrongCommandError,
    encode_points_answer,
    encode_series_lines,
    parse_key,
    parse_request,
)
from metrics_lab.protocol.wire_format import (
    ALL_KEYS,
    DEFAULT_MAX_ANSWER_SIZE,
    DEFAULT_MAX_LINE,
    ERROR_ANSWER,
    INT64_MAX,
    INT64_MIN,
    OK_ANSWER,
    Answer,
    GetRequest,
    PutRequest,
    Request,
)
from metrics_lab.storage import PointBatch

__all__ = [
    "ALL_KEYS",
    "DEFAULT_MAX_ANSWER_SIZE",
    "DEFAULT_MAX_LINE",
    "ERROR_ANSWER",
    "INT64_MAX",
    "INT64_MIN",
    "NEED_DATA",
    "OK_ANSWER",
    "Answer",
    "AnswerReader",
    "GetRequest",
    "Item",
    "LineReader",
    "MalformedAnswerError",
    "NeedData",
    "PointBatch",
    "ProtocolError",
    "PutRequest",
    "RefusedRequestError",
    "Request",
    "SimpleParser",
    "StreamEndedError",
    "UnsendableRequestError",
    "WrongCommandError",
    "check_put_answer",
    "encode_get",
    "encode_points_answer",
    "encode_put",
    "encode_puts",
    "encode_series_lines",
    "parse_get_answer",
    "parse_key",
    "parse_request",
]
