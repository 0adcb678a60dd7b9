"""The benchmark: our server against the least asyncio server for the same protocol.

Run it with ``metrics-lab bench`` or ``python -m benchmarks`` (``--quick`` for a short run).
Each server runs as its own process (:mod:`benchmarks.serve`), and the load comes from another
process (:mod:`benchmarks.load`), so the figures compare like with like. ``import metrics_lab``
never imports this package.

- :mod:`benchmarks.baseline`: the baseline server (split, ``float()``/``int()``, dict of dicts).
- :mod:`benchmarks.serve`: starts either server on a free port and prints the port.
- :mod:`benchmarks.load`: the load generator, one scenario per run.
- :mod:`benchmarks.run`: starts everything in turn and prints the table.
"""
