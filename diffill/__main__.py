"""``python -m diffill ...`` is the ``diffill`` command."""

import sys

from diffill.cli import main

sys.exit(main())
