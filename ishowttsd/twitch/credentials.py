"""The bot's login and OAuth token, read from a file only its owner (and group) can read.

File format (TOML)::

    login = "mybot"                  # the bot account's login name
    token = "oauth:abcdef0123..."    # chat:read (and chat:edit) scope; "oauth:" is added if missing
    moderator_token = "..."          # optional: a token from the daemon's chat.moderator_tokens,
                                     # sent with `clear` (Twitch /clear) so the daemon accepts it

A token in a world-readable file is a token every local user (and every compromised service)
can use to speak as the bot, so such a file is refused -- naming it and the fix -- rather than
read. The mode is checked on the opened descriptor, so the file checked is the file read.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import tomlkit
import tomlkit.exceptions

from ishowttsd.confread import ConfigError, Table

_LOGIN_RE = re.compile(r"^[A-Za-z0-9_]{1,50}$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_:.\-]{1,512}$")


@dataclass(frozen=True)
class Credentials:
    login: str | None = None
    token: str | None = field(default=None, repr=False)
    moderator_token: str | None = field(default=None, repr=False)


def load_credentials(path: Path) -> Credentials:
    """Read ``path``; raise :class:`ConfigError` naming the file and the key (never the secret)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(path, "(file)", "credentials file does not exist") from None
    except OSError as e:
        raise ConfigError(path, "(file)", f"credentials file cannot be opened: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(path, "(file)", "credentials file is not a regular file")
        if st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
            mode = stat.S_IMODE(st.st_mode)
            raise ConfigError(
                path,
                "(file)",
                f"credentials file is readable or writable by every user (mode {mode:04o}); "
                f"refusing to use it. Fix: chmod 600 {path}",
            )
        data = f.read(65536)
    try:
        doc = tomlkit.parse(data.decode("utf-8")).unwrap()
    except UnicodeDecodeError:
        raise ConfigError(path, "(file)", "credentials file is not UTF-8 text") from None
    except tomlkit.exceptions.ParseError as e:
        # The message may quote the line, i.e. the secret: say where, not what.
        raise ConfigError(path, f"line {e.line} column {e.col}", "not valid TOML") from None
    t = Table(doc, "", path)
    login = t.opt_str("login")
    token = t.opt_str("token")
    moderator_token = t.opt_str("moderator_token")
    t.finish()
    if (login is None) != (token is None):
        raise t.error(
            "token" if token is None else "login", "login and token go together: set both or neither"
        )
    if login is not None and not _LOGIN_RE.match(login):
        raise t.error("login", f"{login!r} is not a Twitch login (letters, digits, '_')")
    if token is not None:
        if not token.startswith("oauth:"):
            token = "oauth:" + token
        if not _TOKEN_RE.match(token):
            raise t.error("token", "has characters a Twitch OAuth token never has (or is over 512)")
    if moderator_token is not None and not moderator_token:
        raise t.error("moderator_token", "is empty")
    return Credentials(login=login.lower() if login else None, token=token, moderator_token=moderator_token)
