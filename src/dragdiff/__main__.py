"""``python -m dragdiff ...``: the ``dragdiff`` command where its console script is not installed."""

import sys

from dragdiff.cli import main

sys.exit(main())
