"""The gateway's two secrets: the admin/API bearer token and the overlay key.

Each lives in a file of its own (``[web] token_file``, ``overlay_key_file``). A missing file is
created with a fresh random secret (the token mode 0600, the overlay key 0640: a group that may
put the overlay into OBS need not be able to call the API); a file the user wrote is used as it
is, once checked. Comparisons are constant-time (:func:`hmac.compare_digest`), and the two
secrets are kept apart: the overlay key never opens the API, nor the token the overlay's
read-only routes by accident of being equal (they must differ).
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from ishowttsd.confread import ConfigError

MIN_CHARS = 16
"""Shortest secret accepted from a user-written file."""


def load_or_create(path: Path, mode: int, file: Path | None, key: str, create: bool = True) -> str:
    """The secret in ``path``, created (with ``mode``) when missing and ``create``. Errors name
    the settings ``file`` and ``key`` and say what is wrong with ``path``."""
    if not path.exists() and not create:
        raise ConfigError(file, key, f"{path}: does not exist yet (ishowtts-web makes it when it starts)")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        secret = secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            pass  # another process made it first: read theirs
        except OSError as e:
            raise ConfigError(file, key, f"{path}: cannot create it: {e.strerror}") from None
        else:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(secret + "\n")
            os.chmod(path, mode)  # the umask must not widen or narrow what we promised
            return secret
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(file, key, f"{path}: cannot be read: {e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(file, key, f"{path}: not a regular file")
    if st.st_mode & stat.S_IROTH:
        raise ConfigError(
            file, key, f"{path}: readable by anyone (mode {st.st_mode & 0o777:o}); chmod o-r it"
        )
    if len(text) < MIN_CHARS or any(c.isspace() for c in text):
        raise ConfigError(
            file, key, f"{path}: the secret must be one word of at least {MIN_CHARS} characters"
        )
    return text


def _same(given: str | None, secret: str) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), secret.encode("utf-8"))


@dataclass(frozen=True)
class Keys:
    token: str
    """Admin/API bearer token."""
    overlay_key: str
    """Read-only key in overlay URLs."""

    def __post_init__(self) -> None:
        if hmac.compare_digest(self.token.encode(), self.overlay_key.encode()):
            raise ValueError("the API token and the overlay key must differ")

    def bearer_ok(self, authorization: str | None) -> bool:
        """An ``Authorization: Bearer TOKEN`` header with the API token (never the overlay key)."""
        if authorization is None:
            return False
        scheme, _, value = authorization.partition(" ")
        return scheme.lower() == "bearer" and _same(value.strip(), self.token)

    def overlay_ok(self, key: str | None) -> bool:
        """The overlay key (from a URL's ``key``)."""
        return _same(key, self.overlay_key)


def load_keys(
    token_file: Path, overlay_key_file: Path, settings_file: Path | None, create: bool = True
) -> Keys:
    """Both secrets (made when missing, unless ``create`` is false: ``--print-urls`` run by root
    must not leave root-owned secrets the service cannot read)."""
    token = load_or_create(token_file, 0o600, settings_file, "web.token_file", create)
    key = load_or_create(overlay_key_file, 0o640, settings_file, "web.overlay_key_file", create)
    try:
        return Keys(token, key)
    except ValueError as e:
        raise ConfigError(settings_file, "web.overlay_key_file", f"{overlay_key_file}: {e}") from None


__all__ = ["Keys", "load_keys", "load_or_create"]
