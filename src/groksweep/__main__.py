"""``python -m groksweep``: the command line (:mod:`groksweep.cli`)."""

import sys

from groksweep.cli import console

sys.exit(console())
