"""What every part of the web gateway is given: the settings, the keys, the daemon's control
client and its PUB feed (:class:`Gateway`). Its own module so that the parts can import it
without importing the application that mounts them."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from ishowttsd.client.aio import DaemonClient
from ishowttsd.client.feed import Feed
from ishowttsd.config import Settings
from ishowttsd.web.auth import Keys


@dataclass
class Gateway:
    """What every route provider gets."""

    settings: Settings
    """The whole settings file (``settings.web`` is the ``[web]`` section)."""
    keys: Keys
    daemon: DaemonClient
    """The daemon's control socket (connected in the app's lifespan)."""
    feed: Feed
    """The daemon's PCM/event PUB, fanned out (started in the app's lifespan)."""
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    """Tasks a provider needs for the app's lifetime (started after the feed, cancelled at exit)."""
    large_bodies: dict[str, int] = field(default_factory=dict)
    """Paths whose request bodies may exceed ``[web] max_body_bytes`` (uploads), and their bound."""
