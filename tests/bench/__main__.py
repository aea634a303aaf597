"""``python -m tests.bench``: see ``tests.bench.cli``."""

import sys

from tests.bench.cli import main

sys.exit(main())
