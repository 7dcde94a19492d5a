"""``ishowtts-keys``: CURVE keys for reaching the daemon over the network.

    ishowtts-keys init                 the daemon's key pair, and an empty authorized_clients/
    ishowtts-keys client NAME          a client key pair in clients/, authorised at once
    ishowtts-keys authorize FILE       authorise a client's public key made elsewhere
    ishowtts-keys revoke NAME          remove a client's authorisation
    ishowtts-keys list                 the server's public key and the authorised clients

Then point ``[security] keys_dir`` at the directory, and reload the daemon (SIGHUP) after
authorising or revoking. Clients use ``ishowtts-say --server-key DIR/server.key
--client-key DIR/clients/NAME.key_secret`` (or ``$ISHOWTTS_SERVER_KEY`` / ``$ISHOWTTS_CLIENT_KEY``).
"""

from __future__ import annotations

import argparse
import grp
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import zmq.auth

from ishowttsd.security import AUTHORIZED_DIR, SERVER_NAME

DEFAULT_DIR = Path("/etc/ishowtts/keys")
DAEMON_GROUP = "ishowtts"
CLIENTS_DIR = "clients"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_FAILED = 1


def _default_dir() -> Path:
    return Path(os.environ.get("ISHOWTTS_KEYS", str(DEFAULT_DIR)))


def _check_name(name: str) -> str:
    # The name becomes a file name: no paths, no dot files.
    if not NAME_RE.match(name) or name == SERVER_NAME:
        raise SystemExit(
            f"ishowtts-keys: bad client name {name!r}: letters, digits, '_', '.', '-' (not 'server')"
        )
    return name


def _private_dir(path: Path, mode: int, gid: int | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if gid is not None:
        os.chown(path, -1, gid)
    os.chmod(path, mode)


def _gid(group: str) -> int | None:
    """The daemon's group, so it (and only it) can read the server's secret key."""
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def cmd_init(d: Path, force: bool, group: str) -> int:
    secret = d / f"{SERVER_NAME}.key_secret"
    if secret.exists() and not force:
        print(f"ishowtts-keys: {secret} exists (--force makes a new one; every client must then "
              "get the new server.key)", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    gid = _gid(group)
    _private_dir(d, 0o750, gid)
    _private_dir(d / AUTHORIZED_DIR, 0o750, gid)
    public_file, secret_file = zmq.auth.create_certificates(d, SERVER_NAME)
    if gid is not None:
        os.chown(secret_file, -1, gid)
    os.chmod(secret_file, 0o640 if gid is not None else 0o600)
    os.chmod(public_file, 0o644)
    print(f"server key pair: {public_file} (give to clients), {secret_file} (keep secret)")
    print(f'set in the daemon\'s config:  [security] keys_dir = "{d}"')
    return EXIT_OK


def cmd_client(d: Path, name: str, out: Path | None) -> int:
    name = _check_name(name)
    out = out or d / CLIENTS_DIR
    _private_dir(out, 0o700)
    if (out / f"{name}.key_secret").exists():
        print(f"ishowtts-keys: {out / (name + '.key_secret')} exists", file=sys.stderr)
        return EXIT_FAILED
    public_file, secret_file = zmq.auth.create_certificates(out, name)
    os.chmod(secret_file, 0o600)
    rc = cmd_authorize(d, Path(public_file), name)
    print(f"client key pair: {secret_file} (the client's secret; give it only to that client)")
    return rc


def cmd_authorize(d: Path, public_file: Path, name: str | None) -> int:
    try:
        public, _ = zmq.auth.load_certificate(public_file)
    except (OSError, ValueError) as e:
        print(f"ishowtts-keys: {public_file}: not a ZeroMQ certificate: {e}", file=sys.stderr)
        return EXIT_FAILED
    name = _check_name(name or public_file.name.split(".")[0])
    auth = d / AUTHORIZED_DIR
    if not auth.is_dir():
        print(f"ishowtts-keys: {auth} missing: run `ishowtts-keys init --dir {d}` first", file=sys.stderr)
        return EXIT_FAILED
    target = auth / f"{name}.key"
    # Only the public half is ever copied here, whatever file was given.
    tmp = auth / f".{name}.key.tmp"
    tmp.write_text(
        "#   ZeroMQ CURVE public key, authorised by ishowtts-keys\n"
        f'metadata\n    name = "{name}"\ncurve\n    public-key = "{public.decode()}"\n'
    )
    os.chmod(tmp, 0o644)
    tmp.replace(target)
    print(f"authorised {name}: {public.decode()} ({target}); reload the daemon: systemctl reload ishowtts")
    return EXIT_OK


def cmd_revoke(d: Path, name: str) -> int:
    target = d / AUTHORIZED_DIR / f"{_check_name(name)}.key"
    if not target.exists():
        print(f"ishowtts-keys: {name} is not authorised", file=sys.stderr)
        return EXIT_FAILED
    target.unlink()
    print(f"revoked {name}; reload the daemon: systemctl reload ishowtts")
    return EXIT_OK


def cmd_list(d: Path) -> int:
    secret = d / f"{SERVER_NAME}.key_secret"
    if not secret.exists():
        print(f"ishowtts-keys: no server key in {d} (ishowtts-keys init)", file=sys.stderr)
        return EXIT_FAILED
    public, _ = zmq.auth.load_certificate(secret)
    print(f"server\t{public.decode()}\t{d / (SERVER_NAME + '.key')}")
    auth = d / AUTHORIZED_DIR
    for f in sorted(auth.glob("*.key")) if auth.is_dir() else []:
        try:
            key, _ = zmq.auth.load_certificate(f)
            shown = key.decode()
        except (OSError, ValueError) as e:
            shown = f"UNREADABLE: {e}"
        print(f"client {f.stem}\t{shown}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ishowtts-keys",
        description="Make and authorise CURVE keys for network access to ishowttsd.",
        epilog=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"key directory ([security] keys_dir; default $ISHOWTTS_KEYS or {DEFAULT_DIR})",
    )
    p.add_argument(
        "--group",
        default=DAEMON_GROUP,
        help=f"group the daemon runs as, given read access to its secret key (default {DAEMON_GROUP}; "
        "ignored if it does not exist)",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init", help="make the daemon's key pair")
    i.add_argument("--force", action="store_true", help="replace an existing server key pair")
    c = sub.add_parser("client", help="make a client key pair and authorise it")
    c.add_argument("name")
    c.add_argument("--out", type=Path, help=f"where the client's files go (default DIR/{CLIENTS_DIR})")
    a = sub.add_parser("authorize", help="authorise a client's public key file")
    a.add_argument("public_key", type=Path)
    a.add_argument("--name", help="name to file it under (default: the file's name)")
    r = sub.add_parser("revoke", help="remove a client's authorisation")
    r.add_argument("name")
    sub.add_parser("list", help="show the server key and authorised clients")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    d: Path = args.dir or _default_dir()
    try:
        if args.cmd == "init":
            return cmd_init(d, args.force, args.group)
        if args.cmd == "client":
            return cmd_client(d, args.name, args.out)
        if args.cmd == "authorize":
            return cmd_authorize(d, args.public_key, args.name)
        if args.cmd == "revoke":
            return cmd_revoke(d, args.name)
        return cmd_list(d)
    except PermissionError as e:
        print(f"ishowtts-keys: {e} (run as root, or give --dir)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
