from __future__ import annotations

import sys
from pathlib import Path

# The test helpers (support.py, asr.py) are plain modules beside the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent))
