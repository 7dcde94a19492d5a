from __future__ import annotations

import sys
from pathlib import Path

# The test helpers (support.py, asr.py) are plain modules beside the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import re

import pytest

_INTEGRATION = re.compile(
    r"^from (support|robust|websupport|voicekit|asr|f5tiny|unitfiles) import|^import (support|robust)"
    r"|subprocess|sys\.executable|Popen|selenium|multiprocessing|running_daemon|F5Engine|^import torch"
    r"|^from ishowttsd\.bench import cli",  # the bench's smoke run loads a model
    re.M,
)
"""A test module that starts processes (the daemon, a browser, install.sh) or loads a model."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``-m "not integration"`` is the fast tier: the in-process tests of plain code."""
    seen: dict[Path, bool] = {}
    for item in items:
        path = Path(str(item.fspath))
        if path not in seen:
            seen[path] = bool(_INTEGRATION.search(path.read_text()))
        if seen[path]:
            item.add_marker(pytest.mark.integration)
