"""``python -m splitfed`` is the ``splitfed`` command."""

import sys

from splitfed.timeline import mark

mark("interpreter up")

from splitfed.cli import main  # noqa: E402 - after the mark, to time the imports

sys.exit(main())
