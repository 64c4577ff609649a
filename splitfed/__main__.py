"""``python -m splitfed`` is the ``splitfed`` command."""

import sys

from splitfed.timeline import mark, party_from_argv, set_party

set_party(party_from_argv(sys.argv[1:]))
mark("interpreter up")

from splitfed.entry import command  # noqa: E402 - after the mark, to time the imports

command()
