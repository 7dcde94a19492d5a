"""ishowttsd: a local chat-to-speech appliance daemon."""

from __future__ import annotations

import os

__version__ = "0.1.0"

# onnxruntime (Piper's runtime, and faster-whisper's VAD in the voice studio) ships Microsoft's 1DS
# telemetry client, which resolves and calls its collector some seconds after the first session:
# seen here as DNS queries from the daemon. An appliance that never calls out must not, and
# onnxruntime reads this switch when it sets up its environment, so it is set before anything of
# ours can import it. (onnxruntime.disable_telemetry_events() was measured not to stop the lookups.)
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
