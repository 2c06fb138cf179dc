"""``python -m bayesdl``: the same as the ``bayesdl`` command (see :mod:`bayesdl.cli`)."""

import sys

from bayesdl.cli import main

if __name__ == "__main__":
    sys.exit(main())
