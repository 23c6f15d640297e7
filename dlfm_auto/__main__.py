"""``python -m dlfm_auto``."""

import sys

from dlfm_auto.cli import main

if __name__ == "__main__":
    sys.exit(main())
