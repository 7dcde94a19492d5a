"""``python -m ishowttsd.daemon``: the same as the ``ishowttsd`` command."""

import sys

from ishowttsd.daemon import main

sys.exit(main())
