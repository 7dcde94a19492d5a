"""Jetson-only parts: the clock lock (``ishowtts-clocks``) and the board's telemetry."""
