"""``python -m projects.context``."""

import sys

from projects.context.cli import main

sys.exit(main())
