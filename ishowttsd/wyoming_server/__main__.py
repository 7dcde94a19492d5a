"""``python -m ishowttsd.wyoming_server`` runs ``ishowtts-wyoming``."""

from __future__ import annotations

import sys

from ishowttsd.wyoming_server.cli import main

sys.exit(main())
