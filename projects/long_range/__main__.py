"""``python -m projects.long_range``."""

import sys

from projects.long_range.cli import main

sys.exit(main())
