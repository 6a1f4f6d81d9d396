"""``python -m pyred`` (and ``torchrun -m pyred run CONFIG``) is the ``pyred`` command."""

import sys

from .study.cli import main

sys.exit(main(sys.argv[1:]))
