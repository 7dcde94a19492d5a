"""Joining a line's chunks while streaming them (numpy only).

Consecutive chunks overlap by a short linear cross-fade, the same join f5-tts uses offline. To
stream it, each chunk's last ``n`` samples are held back until the next chunk (or the end of the
line) arrives, so audio goes out as soon as each chunk is vocoded and the seams have no gap and
no step.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Wave = npt.NDArray[np.float32]


class CrossFader:
    """Feed chunks in order with :meth:`push`; finish with :meth:`flush`."""

    def __init__(self, overlap: int) -> None:
        if overlap < 0:
            raise ValueError(f"overlap must be >= 0 samples, got {overlap}")
        self.overlap = overlap
        self._tail: Wave = np.zeros(0, dtype=np.float32)

    def push(self, chunk: Wave) -> Wave:
        """Return the samples that are final now; hold back up to ``overlap`` for the next seam."""
        x = np.asarray(chunk, dtype=np.float32)
        k = min(len(self._tail), len(x), self.overlap)
        if k > 0:
            fade_in = np.linspace(0.0, 1.0, k, dtype=np.float32)
            seam = self._tail[len(self._tail) - k :] * (1.0 - fade_in) + x[:k] * fade_in
            out = np.concatenate([self._tail[: len(self._tail) - k], seam, x[k:]])
        else:
            out = np.concatenate([self._tail, x])
        hold = min(self.overlap, len(out))
        self._tail = out[len(out) - hold :].copy()
        return out[: len(out) - hold]

    def flush(self) -> Wave:
        """The held-back end of the last chunk."""
        tail, self._tail = self._tail, np.zeros(0, dtype=np.float32)
        return tail
