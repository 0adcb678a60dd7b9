"""Solutions to the exercises of notebook 04, metrics to DataFrames.

Run it on its own (``python notebooks/solutions/04_metrics_to_dataframes.py``) or paste a part
into the notebook, where ``frame``, ``wide`` and ``client`` already exist.
"""

from metrics_lab import Client, serve_in_background
from metrics_lab.dataframes import to_frame, to_points, to_wide
from metrics_lab.synthetic import fleet

# In a with block the server stops and the client closes at its end, as the notebook's
# server.stop() and client.close() do.
with serve_in_background() as server, Client(*server.address, timeout=10) as client:
    client.put_many(fleet(hosts=("web1", "web2", "db1"), points=1440, seed=42))
    frame = to_frame(client.get("*"))
    wide = to_wide(frame)

    # 1. Reclaims: minute-to-minute drops of more than 100 MiB, per host.
    memory_keys = [key for key in wide.columns if key.endswith(".memory")]
    reclaims = (wide[memory_keys].diff() < -100).sum()
    print(reclaims)

    # 2. The hour of the day (UTC) with the highest mean CPU load, per host.
    cpu = frame[frame["key"].str.endswith(".cpu")]
    by_hour = cpu.groupby(["key", cpu["time"].dt.hour])["value"].mean()
    print(by_hour.groupby(level="key").idxmax().map(lambda pair: pair[1]))

    # 3. 5-minute maxima of latency, stored back. The day runs from 22:13:20 to 22:12:20 the
    #    next day; 5-minute buckets aligned on the clock (22:10, 22:15, ...) number 289: 288
    #    for the 24 hours plus one, because the first and the last bucket are both partial.
    latency_keys = [key for key in wide.columns if key.endswith(".latency")]
    maxima = wide[latency_keys].resample("5min").max().add_suffix(".5m.max")
    client.put_many(to_points(maxima))
    stored = client.get("*")
    print({key: len(points) for key, points in stored.items() if key.endswith(".5m.max")})
    assert all(len(points) == 289 for key, points in stored.items() if key.endswith(".5m.max"))
