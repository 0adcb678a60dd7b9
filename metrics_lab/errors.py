"""The exceptions a metrics_lab client raises, split by who is at fault.

Everything a client raises for a failed request is a :class:`ClientError`, so the course's
``except ClientError`` catches it all; the subclasses let a program tell the cases apart::

    ClientError
    ├── InvalidRequestError     you asked for something the protocol cannot carry
    ├── RequestRejectedError    the server understood the request and answered "error"
    ├── ClientBusyError         another thread or task kept the client busy too long
    ├── RemoteProtocolError     the server's reply is not the protocol
    └── ClientConnectionError   the network failed: refused, reset, closed, timed out
        └── ClientTimeoutError  no answer within the client's timeout

What each leaves behind: after ``InvalidRequestError``, ``RequestRejectedError`` and
``ClientBusyError`` the connection is in step and usable; after ``RemoteProtocolError`` and
``ClientConnectionError`` (and after any other exception that interrupts a request, such as
``KeyboardInterrupt`` or a cancelled task) the client is closed, because it can no longer
prove which answer the next bytes belong to: call ``reconnect()`` to go on.

Each client translates failures into this tree in one place, where it does I/O, with
``raise ... from exc``: a network error keeps the original :class:`OSError` as ``__cause__``;
what the sans-IO layer finds (a key it cannot encode, bytes that are not an answer, an
``error`` answer) keeps its :class:`metrics_lab.protocol.ProtocolError`, whose message the
``ClientError`` repeats. The protocol does not import this module; the mapping is
:func:`metrics_lab.client.client_error`.
"""

from __future__ import annotations

__all__ = [
    "ClientBusyError",
    "ClientConnectionError",
    "ClientError",
    "ClientTimeoutError",
    "InvalidRequestError",
    "RemoteProtocolError",
    "RequestRejectedError",
]


class ClientError(Exception):
    """A request could not be completed; the message says why and what to do."""


class InvalidRequestError(ClientError, ValueError):
    """The arguments cannot go on the wire (a key with spaces, a ``nan`` value, ...).

    Raised before anything is sent, so the connection is still usable.
    """


class RequestRejectedError(ClientError):
    """The server answered ``error``: it understood the framing but refused the request.

    ``detail`` holds the server's explanation (``"wrong command"`` for the course protocol).
    The connection is still usable.
    """

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class ClientBusyError(ClientError):
    """Another thread or task held the client for longer than its timeout.

    A client serves one request at a time; this one waited for its turn and gave up. Nothing
    was sent, and the client is as it was (the other request goes on).
    """


class RemoteProtocolError(ClientError):
    """The server sent bytes that are not a valid answer; the connection is closed."""


class ClientConnectionError(ClientError):
    """The connection failed (refused, reset, closed mid-answer); the client is closed.

    Make a new :class:`~metrics_lab.Client` (or call ``reconnect()``) to go on.
    """


class ClientTimeoutError(ClientConnectionError):
    """No complete answer arrived within the client's timeout; the client is closed."""
