"""``python -m portal``: the indexer, as ``pilotchain-portal-indexer``."""

import sys

from portal.cli import main

sys.exit(main())
