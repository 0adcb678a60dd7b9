"""Solutions to the exercises of notebook 02, the client.

Run it on its own (``python notebooks/solutions/02_the_client.py``) or paste a part into the
notebook.
"""

from metrics_lab import Client, ClientConnectionError, WireLog, serve_in_background
from metrics_lab.dataframes import wire_frame

# In a with block the server stops (and a Client closes) at its end, as the notebook's
# server.stop() and client.close() do.
with serve_in_background() as server:
    wire = WireLog()
    with Client(*server.address, timeout=5, wire=wire) as client:
        # 1. Bytes of a "get *" answer for 100 points of one key.
        client.put_many([("web1.cpu", 40.0 + i / 10, 1_700_000_000 + 60 * i) for i in range(100)])
        wire.clear()
        client.get("*")
        size = sum(len(event.data) for event in wire if event.direction == "received")
        # "ok\n" + 100 lines like "web1.cpu 40.1 1700000060\n" + "\n": about 25 bytes a point.
        print(f"{size} bytes, {size / 100:.1f} per point")

        # 2. The int 301 goes out as "301", the float 301.0 as "301.0" (str(value)); both are
        #    stored as the float 301.0, and the second put replaces the first (same timestamp).
        wire.clear()
        client.put("load", 301, 1)
        client.put("load", 301.0, 1)
        print(wire_frame(wire)[["direction", "bytes"]])
        print(client.get("load"))  # {'load': [(1, 301.0)]}


def get_or_empty(client: Client, key: str) -> list[tuple[int, float]]:
    """3. A key's points, [] if it has none; one reconnect if the connection failed."""
    try:
        result = client.get(key)
    except ClientConnectionError:
        client.reconnect()
        result = client.get(key)
    return result.get(key, [])


with serve_in_background() as server, Client(*server.address, timeout=5) as client:
    client.put("cpu", 0.5, 1)
    client.close()  # a dropped connection: get_or_empty reconnects once
    print(get_or_empty(client, "cpu"), get_or_empty(client, "nothing"))  # [(1, 0.5)] []
