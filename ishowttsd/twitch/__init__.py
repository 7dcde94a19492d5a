"""Twitch chat bridge (``ishowtts-twitch``): Twitch IRC in, the daemon's ingest protocol out.

- :mod:`.irc` frames and parses IRC lines (IRCv3 tags, via ``irctokens``);
- :mod:`.translate` turns Twitch commands into ingest messages (pure functions);
- :mod:`.publisher` sends them on a ZeroMQ PUB that never blocks and counts its drops;
- :mod:`.client` is the connection loop (TLS, CAP, login, JOIN, PING, reconnect with backoff);
- :mod:`.settings` and :mod:`.credentials` read the ``[twitch]`` section and the login file;
- :mod:`.cli` is the entry point.
"""
