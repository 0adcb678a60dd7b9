"""The exceptions a metrics_lab client raises, split by who is at fault.

Everything a client raises for a failed request is a :class:`ClientError`, so the course's
``except ClientError`` catches it all; the subclasses let a program tell the cases apart::

    ClientError
    ├── InvalidRequestError     you asked for something the protocol cannot carry
    ├── RequestRejectedError    the server understood the request and answered "error"
    ├── RemoteProtocolError     the server's reply is not the protocol
    └── ClientConnectionError   the network failed: refused, reset, closed, timed out
        └── ClientTimeoutError  no answer within the client's timeout

Network errors are translated at the socket boundary with ``raise ... from exc``, so the
original :class:`OSError` stays available as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
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


class RemoteProtocolError(ClientError):
    """The server sent bytes that are not a valid answer; the connection is closed."""


class ClientConnectionError(ClientError):
    """The connection failed (refused, reset, closed mid-answer); the client is closed.

    Make a new :class:`~metrics_lab.Client` (or call ``reconnect()``) to go on.
    """


class ClientTimeoutError(ClientConnectionError):
    """No complete answer arrived within the client's timeout; the client is closed."""
