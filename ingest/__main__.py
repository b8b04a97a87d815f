"""``python -m ingest``: the same as the ``pilotchain-ingest`` command."""

import sys

from ingest.cli import main

sys.exit(main())
