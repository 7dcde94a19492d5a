"""``ishowtts-wyoming``: the daemon's voices as a Wyoming TTS service (Home Assistant)."""
