"""``python -m gpubp``: the same as the ``gpubp`` console script."""

import sys

from gpubp.cli.commands import main

sys.exit(main())
