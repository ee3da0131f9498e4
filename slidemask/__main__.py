"""``python -m slidemask``: the same as the ``slidemask`` command."""

import sys

from slidemask.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
