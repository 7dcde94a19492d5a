"""The web gateway (`ishowtts-web`): the OBS overlay and the HTTP APIs, over the daemon's ZeroMQ sockets."""
