"""``python -m splitfed`` is the ``splitfed`` command."""

import sys

from splitfed.cli import main

sys.exit(main())
