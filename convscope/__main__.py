"""``python -m convscope``: the command line (the same as the ``convscope`` command)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
