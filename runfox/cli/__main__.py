"""``python -m runfox.cli``: the same as the ``runfox`` console script."""

import sys

from . import main

sys.exit(main())
