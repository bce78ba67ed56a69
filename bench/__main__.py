"""`python -m bench`: every benchmark, printed as one table (`--quick` for small counts)."""

from __future__ import annotations

import sys

from bench.run import main

sys.exit(main(sys.argv[1:]))
