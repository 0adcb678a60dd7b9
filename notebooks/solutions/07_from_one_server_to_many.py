"""Solutions to the exercises of notebook 07, from one server to many.

Run it on its own (``python notebooks/solutions/07_from_one_server_to_many.py``): it starts a
temporary PostgreSQL (or uses ``METRICS_LAB_POSTGRES``), or says how to get one and stops.
"""

import contextlib
import os

from metrics_lab import Client, serve_in_background
from metrics_lab.postgres_cluster import PostgresNotFound, temporary_cluster
from metrics_lab.synthetic import fleet

with contextlib.ExitStack() as cleanup:
    url = os.environ.get("METRICS_LAB_POSTGRES")
    if url is None:
        try:
            url = cleanup.enter_context(temporary_cluster()).url
        except PostgresNotFound as missing:
            print(f"These solutions need PostgreSQL. {missing}.")
            raise SystemExit(0) from None
    first = cleanup.enter_context(serve_in_background(db=url))
    second = cleanup.enter_context(serve_in_background(db=url))

    # 1. The later write (the later commit) wins, whichever server took it: the servers keep
    #    nothing, the database keeps one row per key and timestamp.
    for order in ((first, second), (second, first)):
        for value, server in enumerate(order, start=1):
            with Client(*server.address, timeout=10) as client:
                client.put("race", float(value), 100)
        with Client(*first.address, timeout=10) as client:
            print("exercise 1:", client.get("race"))  # {'race': [(100, 2.0)]} both times

    # 2. The highest CPU load of each host for each hour, in SQL.
    import psycopg

    with Client(*first.address, timeout=10) as client:
        client.put_many(fleet(hosts=("web1", "web2"), points=240, seed=7))
    query = """
        SELECT split_part(key, '.', 1) AS host,
               date_trunc('hour', to_timestamp(ts)) AS hour,
               max(value) AS highest
        FROM metric_points WHERE key LIKE '%.cpu'
        GROUP BY host, hour ORDER BY host, hour
    """
    with psycopg.connect(url) as db:
        for host, hour, highest in db.execute(query):
            print("exercise 2:", host, f"{hour:%Y-%m-%d %H:%M}", round(highest, 1))

    # 3. Three servers; two stop; the third still sees every point.
    third = cleanup.enter_context(serve_in_background(db=url))
    for index, server in enumerate((first, second, third)):
        with Client(*server.address, timeout=10) as client:
            client.put("three", float(index), index)
    first.stop()
    second.stop()
    with Client(*third.address, timeout=10) as client:
        print("exercise 3:", client.get("three"))  # {'three': [(0, 0.0), (1, 1.0), (2, 2.0)]}
