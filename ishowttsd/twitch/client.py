"""The connection loop: TLS, capabilities, login, JOIN, PING/PONG, RECONNECT, backoff.

One thread, one socket. The socket is read with a short timeout so the loop also ticks while chat
is quiet: it drains the publisher's subscription news, sends the systemd watchdog ping, notices a
dead connection (no line for ``ping_interval_s`` -> our PING; no answer in ``ping_timeout_s`` ->
reconnect) and sees a stop request within a tick.

Reconnects back off exponentially from ``reconnect_min_s`` to ``reconnect_max_s`` with "equal
jitter" (half the delay fixed, half random), so a Twitch-wide outage does not bring every bridge
back in the same second. A connection that stayed joined for ``stable_s`` resets the backoff; one
that fails right after registering does not, so a flapping server cannot make us reconnect in a
tight loop. Twitch's own ``RECONNECT`` (server maintenance) reconnects at once when the backoff is
reset (the first one after a stable connection); a server that sends ``RECONNECT`` again and again
(measured: one answering every JOIN with it made a bridge without this rule reconnect 132 times in
6 s) backs off like any other failure.
"""

from __future__ import annotations

import random
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ishowttsd import log
from ishowttsd.notify import Notifier
from ishowttsd.twitch.credentials import Credentials
from ishowttsd.twitch.irc import LineBuffer, MalformedLine, Message, format_line, parse_line
from ishowttsd.twitch.publisher import Publisher
from ishowttsd.twitch.settings import TwitchSettings, split_server
from ishowttsd.twitch.translate import Translator

_log = log.get(__name__)

TICK_S = 0.5
CAPABILITIES = "twitch.tv/tags twitch.tv/commands"
EXIT_OK = 0
EXIT_CONFIG = 2
"""Bad configuration, command line or credentials file (as ``ishowttsd``'s 2): never connected."""
EXIT_LOGIN_REFUSED = 3
"""The server refused the bot's login (wrong or expired token): retrying cannot help."""

_LOGIN_FAILURES = ("login authentication failed", "improperly formatted auth", "invalid nick")


class LoginRefused(Exception):
    pass


class Interrupted(Exception):
    """Raised by the stop-signal handler while :attr:`Bridge.interruptible` (a blocking connect)."""


class SessionEnded(Exception):
    """A connection ended in a way that calls for a reconnect; ``reason`` is for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _is_moderator(body: dict[str, Any]) -> bool:
    roles = body.get("roles", ())
    return body.get("text") is not None and ("moderator" in roles or "broadcaster" in roles)


def backoff_delay(attempt: int, lo: float, hi: float, rng: random.Random) -> float:
    """Seconds before reconnect ``attempt`` (0-based): ``d/2 + U(0, d/2)`` with ``d = min(hi, lo*2^n)``."""
    d = min(hi, lo * (2.0 ** min(attempt, 60)))
    return d / 2 + rng.uniform(0, d / 2)


@dataclass
class _Conn:
    sock: socket.socket
    nick: str
    registered: bool = False
    joined_at: float | None = None


class Bridge:
    def __init__(
        self,
        settings: TwitchSettings,
        channel: str,
        credentials: Credentials,
        publisher: Publisher,
        stop: threading.Event | None = None,
        notifier: Notifier | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        show_rewards: bool = False,
    ) -> None:
        self.settings = settings
        self.channel = channel
        self.host, self.port = split_server(settings.server)
        self.creds = credentials
        self.publisher = publisher
        self.stop = stop or threading.Event()
        self.notifier = notifier or Notifier({})
        self.rng = rng or random.Random()
        self.clock = clock
        self.translator = Translator()
        self.counters: Counter[str] = Counter()
        self._tls: ssl.SSLContext | None = self._tls_context(settings.ca_file) if settings.tls else None
        self._last_watchdog = -1e18
        self.interruptible = False
        self.show_rewards = show_rewards
        self._rewards_seen: set[str] = set()
        """True only around the blocking connect: a stop signal may then raise :class:`Interrupted`."""

    @staticmethod
    def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
        # With a cafile, only that bundle is trusted (tests, private networks); else the system store.
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    # -- the outer loop ------------------------------------------------------------------------------
    def run(self) -> int:
        attempt = 0
        while not self.stop.is_set():
            self.counters["connects"] += 1
            conn: _Conn | None = None
            try:
                conn = self._connect()
                reason = self._serve(conn)
            except Interrupted:
                break
            except LoginRefused as e:
                self._login_refused(str(e))
                return EXIT_LOGIN_REFUSED
            except SessionEnded as e:
                reason = e.reason
            except ssl.SSLCertVerificationError as e:
                reason = f"TLS certificate not trusted: {e.verify_message}"
            except (OSError, ssl.SSLError) as e:
                reason = f"{type(e).__name__}: {e}"
            finally:
                if conn is not None:
                    self._close(conn)
            if self.stop.is_set():
                break
            self.counters["disconnects"] += 1
            joined_at = conn.joined_at if conn is not None else None
            if joined_at is not None and self.clock() - joined_at >= self.settings.stable_s:
                attempt = 0
            if reason == "RECONNECT" and attempt == 0:
                delay = 0.0  # maintenance after a stable connection: at once
            else:
                delay = backoff_delay(
                    attempt, self.settings.reconnect_min_s, self.settings.reconnect_max_s, self.rng
                )
            attempt += 1
            _log.warning(
                "disconnected; reconnecting", reason=reason, delay_s=round(delay, 2), attempt=attempt
            )
            self.notifier.status(f"#{self.channel}: disconnected ({reason[:80]}); retry in {delay:.0f}s")
            self._sleep(delay)
        return EXIT_OK

    def _login_refused(self, notice: str) -> None:
        if self.creds.login:
            _log.error(
                "the server refused the bot's login; fix the token in the credentials file",
                server=self.settings.server,
                login=self.creds.login,
                notice=notice,
                file=str(self.settings.credentials),
            )
        else:
            # An anonymous (justinfan) login has no token to fix: this server does not allow
            # anonymous reading, or it is not Twitch's IRC.
            _log.error(
                "the server refused the anonymous (read-only) login; this server needs a bot login: "
                "give one with --credentials (or [twitch] credentials), see docs/TWITCH.md",
                server=self.settings.server,
                notice=notice,
            )
        self.notifier.status(f"login refused by {self.settings.server}")

    def _sleep(self, seconds: float) -> None:
        end = self.clock() + seconds
        while not self.stop.is_set():
            left = end - self.clock()
            if left <= 0:
                return
            self.stop.wait(min(left, TICK_S))
            self._tick()

    def _show_reward(self, body: dict[str, Any]) -> None:
        """``--show-rewards``: log each channel-point reward id once, with a sample of its text, so a
        streamer can copy it into ``[[chat.rewards]]``."""
        rid = str(body["reward_id"])
        if rid in self._rewards_seen or len(self._rewards_seen) >= 1000:
            return
        self._rewards_seen.add(rid)
        _log.info(
            "channel-point reward",
            reward_id=rid,
            user=body.get("user"),
            text=str(body.get("text", ""))[:80],
            config=f'[[chat.rewards]] id = "{rid}"',
        )

    def _tick(self) -> None:
        self.publisher.tick()
        if self.notifier.watchdog_usec:
            now = self.clock()
            if now - self._last_watchdog >= self.notifier.watchdog_usec / 4e6:
                self.notifier.watchdog()
                self._last_watchdog = now

    # -- one connection ------------------------------------------------------------------------------
    def _connect(self) -> _Conn:
        timeout = self.settings.connect_timeout_s
        _log.info("connecting", server=f"{self.host}:{self.port}", tls=self._tls is not None)
        # DNS, TCP connect and the TLS handshake block for up to connect_timeout_s; a stop signal
        # arriving meanwhile interrupts them (see interruptible) rather than outwaiting TimeoutStopSec.
        self.interruptible = True
        try:
            raw = socket.create_connection((self.host, self.port), timeout=timeout)
            try:
                sock: socket.socket = raw
                if self._tls is not None:
                    sock = self._tls.wrap_socket(raw, server_hostname=self.host)
            except BaseException:
                raw.close()
                raise
        finally:
            self.interruptible = False
        # Twitch's anonymous read-only login: any justinfan<digits> nick, no password.
        nick = self.creds.login or f"justinfan{self.rng.randint(10000, 99999)}"
        conn = _Conn(sock=sock, nick=nick)
        self._send(conn, format_line("CAP", "REQ", CAPABILITIES), secret=False)
        if self.creds.token:
            self._send(conn, format_line("PASS", self.creds.token), secret=True)
        self._send(conn, format_line("NICK", nick), secret=False)
        return conn

    def _send(self, conn: _Conn, line: bytes, secret: bool = False) -> None:
        conn.sock.settimeout(self.settings.connect_timeout_s)
        conn.sock.sendall(line)
        _log.debug("sent", line="PASS ***" if secret else line.decode("utf-8", "replace").rstrip())

    def _close(self, conn: _Conn) -> None:
        try:
            if self.stop.is_set():
                conn.sock.settimeout(1.0)
                conn.sock.sendall(format_line("QUIT", "bye"))
        except OSError:
            pass
        try:
            conn.sock.close()
        except OSError:
            pass

    def _serve(self, conn: _Conn) -> str:
        """Read lines until the connection ends; return (or raise SessionEnded with) the reason."""
        buf = LineBuffer()
        start = last_rx = self.clock()
        ping_sent: float | None = None
        while not self.stop.is_set():
            conn.sock.settimeout(TICK_S)
            try:
                data = conn.sock.recv(65536)
            except TimeoutError:
                data = None
            now = self.clock()
            if data == b"":
                raise SessionEnded("server closed the connection")
            if data:
                last_rx, ping_sent = now, None
                overlong = buf.overlong
                for raw in buf.feed(data):
                    if self._handle(conn, raw) == "RECONNECT":
                        return "RECONNECT"
                if buf.overlong != overlong:
                    self.counters["malformed"] += buf.overlong - overlong
                    _log.warning("malformed line skipped", reason="line too long")
            if not conn.registered and now - start > self.settings.connect_timeout_s:
                raise SessionEnded(f"not registered within {self.settings.connect_timeout_s}s")
            if ping_sent is None and now - last_rx >= self.settings.ping_interval_s:
                self._send(conn, format_line("PING", "ishowtts"))
                ping_sent = now
            elif ping_sent is not None and now - ping_sent >= self.settings.ping_timeout_s:
                raise SessionEnded(f"no answer to PING within {self.settings.ping_timeout_s}s")
            self._tick()
        return "stopped"

    def _handle(self, conn: _Conn, raw: bytes) -> str | None:
        self.counters["lines"] += 1
        try:
            msg = parse_line(raw)
            return self._dispatch(conn, msg)
        except MalformedLine as e:
            self.counters["malformed"] += 1
            _log.warning("malformed line skipped", reason=e.reason, line=e.line)
        except (LoginRefused, SessionEnded, OSError):
            raise
        except Exception:
            # A bug in handling one odd line must not take the channel's speech down with it.
            self.counters["internal_errors"] += 1
            _log.exception("line could not be handled; skipped", line=raw[:200].decode("utf-8", "replace"))
        return None

    def _dispatch(self, conn: _Conn, msg: Message) -> str | None:
        cmd = msg.command
        if cmd == "PING":
            self._send(conn, format_line("PONG", *(msg.params or ("tmi.twitch.tv",))))
        elif cmd == "RECONNECT":
            _log.info("server asked us to reconnect (RECONNECT)")
            return "RECONNECT"
        elif cmd == "001":
            conn.registered = True
            _log.info("registered", nick=conn.nick, anonymous=not self.creds.login)
            self._send(conn, format_line("JOIN", "#" + self.channel))
        elif cmd == "CAP":
            sub = (msg.param(1) or "").upper()
            if sub == "NAK":
                _log.warning("server refused capabilities: no tags (ids, emotes, badges)", caps=msg.param(2))
            elif sub == "ACK":
                _log.info("capabilities granted", caps=msg.param(2))
        elif cmd == "NOTICE":
            text = msg.param(1) or ""
            if not conn.registered and any(f in text.lower() for f in _LOGIN_FAILURES):
                raise LoginRefused(text[:200])
            _log.info("server notice", text=text[:300], msg_id=msg.tags.get("msg-id"))
        elif cmd == "JOIN" and (msg.nick or "").lower() == conn.nick:
            conn.joined_at = self.clock()
            _log.info("joined", channel=self.channel)
            self.notifier.status(f"reading #{self.channel} on {self.settings.server}")
        elif cmd == "PART" and (msg.nick or "").lower() == conn.nick:
            raise SessionEnded("parted from the channel by the server")
        else:
            out = self.translator.translate(msg)
            if out is not None:
                body = out.body
                token = self.creds.moderator_token
                # The token vouches for what the bridge read from Twitch: /clear, and the moderator
                # badge of a chat line (its !skip, !clear, ... are then obeyed without a token of
                # its own). Chat lines of others never carry it.
                if token and (out.topic == b"clear" or _is_moderator(body)):
                    body = {**body, "token": token}
                if self.show_rewards and body.get("reward_id"):
                    self._show_reward(body)
                self.counters[f"in.{out.topic.decode()}"] += 1
                self.publisher.publish(out.topic, body)
        return None
