"""``python -m etl``: see etl.cli."""

import sys

from etl.cli.main import main

sys.exit(main())
