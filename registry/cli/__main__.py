"""``python -m registry.cli``: the ``registry`` command without the console script."""

import sys

from registry.cli import main

sys.exit(main())
