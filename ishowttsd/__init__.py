"""ishowttsd: a local chat-to-speech appliance daemon."""

from __future__ import annotations

__version__ = "0.1.0"
