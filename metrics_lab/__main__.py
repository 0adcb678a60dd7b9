"""``python -m metrics_lab``: the same as the ``metrics-lab`` command."""

from metrics_lab.cli import main

raise SystemExit(main())
