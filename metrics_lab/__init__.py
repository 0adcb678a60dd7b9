"""metrics_lab: a small, fast metrics service, and course material that shows how it works.

The public API, all importable from here (pandas and matplotlib are imported only by
:mod:`metrics_lab.dataframes` and :mod:`metrics_lab.plots`, never on ``import metrics_lab``):

- :class:`Client`, :class:`AsyncClient`: blocking and asyncio clients (``client``, ``async_client``)
- :class:`ClientError` and its subclasses: everything a client raises (``errors``)
- :func:`run_server`, :class:`MetricsServer`: the asyncio server (``server``)
- :func:`serve_in_background`: a server in a thread, for notebooks and tests (``background``)
- :class:`MemoryStore`, :class:`Storage`: where points live (``storage``)
- :class:`SQLiteStore`: points in an SQLite file (``sqlite_store``); :class:`StoreOpenError`: a
  store that cannot be opened (``storage``)
- :class:`WireLog`: a record of the bytes a client sent and received (``wire``)

The wire format itself lives in :mod:`metrics_lab.protocol`, shared by all of the above.

>>> from metrics_lab import Client, serve_in_background
>>> with serve_in_background() as server, Client(*server.address, timeout=5) as client:
...     client.put("palm.cpu", 10.5, 1501864247)
...     client.get("palm.cpu")
{'palm.cpu': [(1501864247, 10.5)]}
"""

from metrics_lab.async_client import AsyncClient
from metrics_lab.background import BackgroundServer, serve_in_background
from metrics_lab.client import Client
from metrics_lab.errors import (
    ClientBusyError,
    ClientConnectionError,
    ClientError,
    ClientTimeoutError,
    InvalidRequestError,
    RemoteProtocolError,
    RequestRejectedError,
)
from metrics_lab.server import MetricsServer, run_server
from metrics_lab.sqlite_store import SQLiteStore
from metrics_lab.storage import MemoryStore, Series, Storage, StoreOpenError
from metrics_lab.wire import WireEvent, WireLog

__all__ = [
    "AsyncClient",
    "BackgroundServer",
    "Client",
    "ClientBusyError",
    "ClientConnectionError",
    "ClientError",
    "ClientTimeoutError",
    "InvalidRequestError",
    "MemoryStore",
    "MetricsServer",
    "RemoteProtocolError",
    "RequestRejectedError",
    "SQLiteStore",
    "Series",
    "Storage",
    "StoreOpenError",
    "WireEvent",
    "WireLog",
    "run_server",
    "serve_in_background",
]

__version__ = "0.1.0"
"""The package's version: the only place it is written (pyproject.toml reads it from here)."""
