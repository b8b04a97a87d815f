"""``python -m closer``: the same as the ``pilotchain-closer`` command."""

import sys

from closer.cli import main

sys.exit(main())
