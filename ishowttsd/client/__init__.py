"""Clients of the daemon's ZeroMQ sockets for other processes (the web gateway, the Wyoming server):
:mod:`ishowttsd.client.aio` (control requests, asyncio) and :mod:`ishowttsd.client.feed` (the PUB)."""
