"""``python -m tests.chaos [chaos|soak] [options]``: see ``tests.chaos.cli``."""

import sys

from tests.chaos.cli import main

sys.exit(main())
