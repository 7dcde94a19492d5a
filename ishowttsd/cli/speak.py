"""``ishowtts-say``'s ``say`` requests: long text as ordered parts, ``--wait``, ``-o``, liveness.

Every text is cut into parts under the daemon's per-job limit (:mod:`ishowttsd.cli.split`).
Parts are sent one at a time, each only after the daemon acknowledged the previous one (so a
part it refuses as too long can be cut again at the limit it names, and order is kept) and
while fewer than :data:`WINDOW` of ours are unfinished (so a book does not fill the daemon's
queue, and a chat line can still get in between). Audio for ``-o`` is written in part order
as it arrives. While waiting, a quiet daemon is pinged: one that stops answering or closes
the connection is reported, with the audio received so far kept.
"""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ishowttsd.cli.conn import Client, unreachable
from ishowttsd.cli.split import DEFAULT_PART_CHARS, limit_from_reason, split_text
from ishowttsd.cli.wavout import OutputError, WavOut

EXIT_DONE = 0
EXIT_USAGE = 2
EXIT_CANCELLED = 3
EXIT_REJECTED = 4
EXIT_TIMEOUT = 5
EXIT_UNREACHABLE = 6
EXIT_OUTPUT = 7

TERMINAL = {"done": EXIT_DONE, "cancelled": EXIT_CANCELLED, "dropped": EXIT_REJECTED, "error": EXIT_REJECTED}

WINDOW = 3
"""At most this many of our parts queued or speaking at once."""
CHARS_PER_S = 10.0
"""A slow speaking rate: a part may take ``--timeout`` plus this estimate of its speech."""
PING_AFTER_S = 2.0
"""Ping the daemon after this many seconds without a word from it."""
MIN_PONG_S = 5.0
"""The least time a ping gets to be answered (``--connect-timeout`` when that is longer)."""


@dataclass
class Options:
    priority: str
    voice: str | None
    wait: bool
    timeout_s: float
    connect_timeout_s: float


@dataclass
class _Part:
    text: str
    token: str = ""
    job: str = ""
    acked: bool = False
    outcome: str = ""
    rate: int = 0
    chunks: list[tuple[int, bytes]] = field(default_factory=list)
    next_seq: int = 0
    gap: bool = False


def _say_err(msg: str) -> None:
    print(f"ishowtts-say: {msg}", file=sys.stderr)


class Speaker:
    """One run of ``ishowtts-say`` with text: sends the parts, follows their events, writes ``-o``."""

    def __init__(self, client: Client, texts: list[str], opts: Options, out: WavOut | None) -> None:
        self.client = client
        self.opts = opts
        self.out = out
        self.limit = DEFAULT_PART_CHARS
        self.parts = [_Part(t) for text in texts for t in split_text(text, self.limit)]
        self.by_token: dict[str, _Part] = {}
        self.by_job: dict[str, _Part] = {}
        self.early_pcm: dict[str, list[tuple[dict[str, Any], bytes]]] = {}
        self.next = 0  # the next part to send
        self.head = 0  # the first part not finished: its audio goes straight to the file
        self.stopped = False  # a part failed: send no more
        self.outcome = EXIT_DONE
        self.first_sent = 0.0
        self.deadline = float("inf")  # for the head part to finish
        self.heard = time.monotonic()
        self.answered = False  # the daemon said anything at all
        self.ping_token: str | None = None
        self.ping_sent = 0.0

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> int:
        try:
            code = self._loop()
        except OutputError as e:
            _say_err(f"{e}; the speech goes on without it")
            return EXIT_OUTPUT
        return self._finish(code)

    def _loop(self) -> int:
        while True:
            self._send_ready_parts()
            if self._complete():
                return self.outcome
            now = time.monotonic()
            problem = self._check_liveness(now)
            if problem is not None:
                return problem
            got = self.client.recv(min(0.5, max(0.0, self.deadline - now)))
            if got is None:
                continue
            self.heard = time.monotonic()
            self.answered = True
            ev, payload = got
            if self.ping_token is not None and ev.get("req") == self.ping_token:
                self.ping_token = None
                continue
            if ev.get("event") == "pcm":
                self._pcm(ev, payload)
                continue
            part = self.by_token.get(str(ev.get("req")))
            if part is not None:
                self._event(part, ev)

    def _complete(self) -> bool:
        sent = self.parts[: self.next]
        if self.opts.wait or self.out is not None:
            return (self.stopped or self.next == len(self.parts)) and all(p.outcome for p in sent)
        return (self.stopped or self.next == len(self.parts)) and all(p.acked for p in sent)

    def _send_ready_parts(self) -> None:
        while not self.stopped and self.next < len(self.parts):
            if self.next > 0 and not self.parts[self.next - 1].acked:
                return
            if sum(1 for p in self.parts[: self.next] if not p.outcome) >= WINDOW:
                return
            part = self.parts[self.next]
            part.token = uuid.uuid4().hex[:8]
            self.by_token[part.token] = part
            req: dict[str, Any] = {"op": "say", "text": part.text, "priority": self.opts.priority}
            req["req"] = part.token
            if self.opts.voice:
                req["voice"] = self.opts.voice
            if self.out is not None:
                req["pcm"] = True
            self.client.send(req)
            if self.next == 0:
                self.first_sent = time.monotonic()
            self.next += 1

    def _check_liveness(self, now: float) -> int | None:
        if not self.answered:
            if self.client.disconnected or now - self.first_sent > self.opts.connect_timeout_s:
                _say_err(unreachable(self.client.endpoint, self.opts.connect_timeout_s))
                return EXIT_UNREACHABLE
            return None
        where = self._where()
        if self.client.disconnected:
            _say_err(f"the daemon at {self.client.endpoint} went away (the connection closed) {where}")
            return EXIT_UNREACHABLE
        pong_bound = max(self.opts.connect_timeout_s, MIN_PONG_S)
        if self.ping_token is not None and now - self.ping_sent > pong_bound:
            _say_err(
                f"the daemon at {self.client.endpoint} stopped answering "
                f"(no answer to a ping in {pong_bound:g} s) {where}"
            )
            return EXIT_UNREACHABLE
        if now > self.deadline:
            _say_err(f"timed out waiting for the speech to finish {where}")
            return EXIT_TIMEOUT
        if self.ping_token is None and now - self.heard > PING_AFTER_S:
            self.ping_token = "ping-" + uuid.uuid4().hex[:8]
            self.ping_sent = now
            self.client.send({"op": "ping", "req": self.ping_token})
        return None

    def _where(self) -> str:
        n = len(self.parts)
        i = min(self.head, n - 1)
        return f"during part {i + 1} of {n}" if n > 1 else "while the job was in progress"

    # -- events -----------------------------------------------------------------------------------
    def _event(self, part: _Part, ev: dict[str, Any]) -> None:
        name = ev.get("event")
        if name == "queued":
            part.acked = True
            part.job = str(ev.get("job"))
            self.by_job[part.job] = part
            for hdr, payload in self.early_pcm.pop(part.job, []):
                self._pcm(hdr, payload)
            if part is self.parts[self.head]:
                self._arm_deadline()
            return
        if name == "error" and ev.get("code") == "text_too_long" and not part.acked:
            self._cut_again(part, str(ev.get("reason", "")))
            return
        if name not in TERMINAL:
            return
        part.acked = True
        part.outcome = str(name)
        code = TERMINAL[str(name)]
        if code != EXIT_DONE:
            i = self.parts.index(part)
            which = f" (part {i + 1} of {len(self.parts)})" if len(self.parts) > 1 else ""
            detail = ev.get("code") or ev.get("reason", "")
            reason = ev.get("detail") or (ev.get("reason") if ev.get("code") else "")
            _say_err(f"{name}{which}: {detail} {reason or ''}".rstrip())
            if self.next < len(self.parts):
                _say_err(f"parts {self.next + 1}-{len(self.parts)} were not sent")
            self.stopped = True
            self.outcome = max(self.outcome, code)
        self._advance_head()

    def _cut_again(self, part: _Part, reason: str) -> None:
        """The daemon's limit is lower than ours: cut this part (not yet sent further) again."""
        self.limit = limit_from_reason(reason, min(self.limit, len(part.text)))
        i = self.parts.index(part)
        self.by_token.pop(part.token, None)
        self.parts[i : i + 1] = [_Part(t) for t in split_text(part.text, self.limit)]
        self.next = i

    def _arm_deadline(self) -> None:
        if self.head < len(self.parts) and self.parts[self.head].acked:
            head = self.parts[self.head]
            self.deadline = time.monotonic() + self.opts.timeout_s + len(head.text) / CHARS_PER_S

    def _advance_head(self) -> None:
        moved = False
        while self.head < len(self.parts) and self.parts[self.head].outcome:
            self._flush(self.parts[self.head])
            self.head += 1
            moved = True
        if moved:
            self.deadline = float("inf")
            if self.head < len(self.parts):
                self._flush(self.parts[self.head])
                self._arm_deadline()

    # -- audio ------------------------------------------------------------------------------------
    def _pcm(self, hdr: dict[str, Any], payload: bytes) -> None:
        job = str(hdr.get("job"))
        part = self.by_job.get(job)
        if part is None:
            self.early_pcm.setdefault(job, []).append((hdr, payload))
            return
        seq = int(hdr.get("seq", part.next_seq))
        if seq != part.next_seq:
            part.gap = True
        part.next_seq = seq + 1
        if hdr.get("rate"):
            part.rate = int(hdr["rate"])
        if payload:
            part.chunks.append((part.rate, payload))
            if self.head < len(self.parts) and part is self.parts[self.head]:
                self._flush(part)

    def _flush(self, part: _Part) -> None:
        if self.out is None:
            part.chunks.clear()
            return
        for rate, payload in part.chunks:
            self.out.write(rate, payload)
        part.chunks.clear()

    def _finish(self, code: int) -> int:
        """Write what is left to ``-o`` in part order and close it, saying what it holds."""
        if self.out is None:
            return code
        try:
            for part in self.parts[self.head :]:
                self._flush(part)
            self.out.close()
        except OutputError as e:
            _say_err(str(e))
            return max(code, EXIT_OUTPUT)
        gaps = [str(i + 1) for i, p in enumerate(self.parts) if p.gap]
        if gaps:
            _say_err(f"audio frames were lost (part {', '.join(gaps)}): {self.out.path} has gaps")
        if self.out.rate_mismatch:
            _say_err(f"the parts came at different sample rates; {self.out.path} is at {self.out.rate} Hz")
        if code not in (EXIT_DONE,):
            _say_err(f"the audio received so far ({self.out.seconds:.1f} s) is in {self.out.path}")
        return code
