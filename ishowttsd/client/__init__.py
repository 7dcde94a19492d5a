"""Clients of the daemon's ZeroMQ sockets for other processes (the web gateway, the Wyoming server)."""
