"""`python -m worker.cli`: the console script."""

import sys

from worker.cli import main

sys.exit(main())
