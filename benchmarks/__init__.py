"""The benchmark: our server against the least asyncio server for the same protocol.

Run it from the source checkout with ``make bench`` or ``python -m benchmarks`` (``--quick``
for a short run, ``--help`` for the options). Each server runs as its own process
(:mod:`benchmarks.serve`), and the load comes from another process (:mod:`benchmarks.load`),
so the figures compare like with like. ``import metrics_lab`` never imports this package.

- :mod:`benchmarks.baseline`: the baseline server (split, ``float()``/``int()``, dict of dicts).
- :mod:`benchmarks.serve`: starts one server (ours with either parser, or the baseline) on a
  free port and prints the port.
- :mod:`benchmarks.load`: the load generator, one scenario per run.
- :mod:`benchmarks.run`: starts every server in turn, runs the scenarios, prints the table;
  ``--before DIR`` adds the server of an older checkout, ``--ours DIR`` measures another
  checkout's, ``--only GROUP`` runs some groups of scenarios (fairness under slow readers,
  idle connections' memory and the held connection limit among them).
- :mod:`benchmarks.trace_path`: the distinct lines one put and one get run on the simple path.
- :mod:`benchmarks.instructions`: instructions per put counted by callgrind, which the
  machine's noise does not move, and their ratio to the baseline's.
- :mod:`benchmarks.durable`: durable (SQLite) ingest against in-memory ingest.
"""
