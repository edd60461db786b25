"""``python -m agemetric``: the ``agemetric`` command (also ``torchrun ... -m agemetric run``)."""

import sys

from agemetric.cli import main

if __name__ == "__main__":
    sys.argv[0] = "agemetric"  # messages and --help name the command, not __main__.py
    main()
