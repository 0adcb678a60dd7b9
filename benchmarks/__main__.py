"""``python -m benchmarks``: run the benchmark and print its table."""

import sys

from benchmarks.run import main

sys.exit(main())
