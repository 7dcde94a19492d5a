"""The Wyoming server's side of the daemon: private speech and the voice list, over one DEALER.

All connections share one :class:`~ishowttsd.client.aio.DaemonClient` (its reader hands each
reply to the request it answers), so twenty Home Assistant satellites cost the daemon one socket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from wyoming.info import Info

from ishowttsd import log
from ishowttsd.client.aio import DaemonClient, DaemonError, DaemonUnreachable
from ishowttsd.wyoming_server.handler import Pcm, SynthesisError
from ishowttsd.wyoming_server.info import build_info

_log = log.get(__name__)

DESCRIBE_TIMEOUT_S = 2.0
"""How long ``describe`` waits for the daemon's voice list before answering from the last one."""


class DaemonSpeaker:
    """Speech for one Wyoming client at a time, synthesised for it alone (``play: false``)."""

    def __init__(self, endpoint: str) -> None:
        self._client = DaemonClient(endpoint)
        self._voices: list[dict[str, object]] = []

    async def describe(self) -> Info:
        """The voices as the daemon lists them now; while it is unreachable (restarting), the
        last list seen, so Home Assistant keeps its settings."""
        try:
            voices = await self._client.request("voices", timeout=DESCRIBE_TIMEOUT_S)
            self._voices = list(voices.get("voices", []))
        except DaemonError as e:
            _log.warning("no voice list from the daemon", code=e.code, reason=e.reason)
        return build_info(self._voices)

    async def speak(self, text: str, voice: str | None) -> AsyncIterator[Pcm]:
        # Leaving the `async with` before the job has finished (the client went away, so the
        # handler's task was cancelled) cancels the job in the daemon.
        async with self._client.say(text, voice=voice, play=False) as speech:
            try:
                await speech.accepted()
                async for frame in speech:
                    if frame.samples:
                        yield Pcm(rate=frame.rate, channels=1, data=frame.samples)
            except DaemonUnreachable as e:
                raise SynthesisError("daemon_unreachable", f"the daemon did not answer: {e.reason}") from None
            except DaemonError as e:
                raise SynthesisError(e.code, e.reason) from None

    async def close(self) -> None:
        await self._client.close()
