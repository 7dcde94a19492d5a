"""``ishowtts-say``: speak text through the daemon (modelled on speech-dispatcher's ``spd-say``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import zmq

from ishowttsd import paths, protocol, security

EXIT_DONE = 0
EXIT_USAGE = 2
EXIT_CANCELLED = 3
EXIT_REJECTED = 4
EXIT_TIMEOUT = 5
EXIT_UNREACHABLE = 6

EPILOG = f"""\
exit codes:
  {EXIT_DONE}  done (or, without --wait, queued); control commands acknowledged
  {EXIT_USAGE}  usage error
  {EXIT_CANCELLED}  the job was cancelled or stopped
  {EXIT_REJECTED}  the job was dropped or rejected, or the daemon answered with an error
  {EXIT_TIMEOUT}  --timeout passed before the job finished
  {EXIT_UNREACHABLE}  the daemon did not answer (not running, or the endpoint is wrong)

The daemon's control endpoint is $ISHOWTTS_CONTROL, else {paths.default_endpoint("control")}.
"""

TERMINAL = {"done": EXIT_DONE, "cancelled": EXIT_CANCELLED, "dropped": EXIT_REJECTED, "error": EXIT_REJECTED}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ishowtts-say",
        description="Speak text through the ishowttsd daemon. Text comes from the arguments, "
        "else from standard input.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("text", nargs="*", help="text to speak (default: read standard input)")
    p.add_argument("--voice", "-v", help="voice id (see --list-voices)")
    p.add_argument("--priority", "-p", choices=protocol.PRIORITIES, default="message")
    p.add_argument("--lines", action="store_true", help="one job per line of standard input")
    p.add_argument("--wait", "-w", action="store_true", help="block until the speech is done")
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds to wait for the daemon/the job (default 60)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=3.0,
        metavar="S",
        help="seconds to wait for the daemon's first answer before giving up (default 3)",
    )
    p.add_argument("-o", "--output", metavar="WAV", help="also receive this job's audio and write it to WAV")
    p.add_argument("--json", action="store_true", help="print every event as a JSON line")
    p.add_argument("--endpoint", help="control endpoint (default: $ISHOWTTS_CONTROL or the runtime dir)")
    p.add_argument(
        "--server-key",
        metavar="FILE|Z85",
        default=os.environ.get("ISHOWTTS_SERVER_KEY"),
        help="CURVE: the daemon's public key (server.key, or its Z85 text) for a tcp:// endpoint "
        "(default $ISHOWTTS_SERVER_KEY)",
    )
    p.add_argument(
        "--client-key",
        metavar="FILE",
        default=os.environ.get("ISHOWTTS_CLIENT_KEY"),
        help="CURVE: this client's secret key file (`ishowtts-keys client`; default $ISHOWTTS_CLIENT_KEY)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--stop", action="store_true", help="stop the current speech")
    g.add_argument("--cancel", action="store_true", help="stop the current speech and empty the queue")
    g.add_argument("--pause", action="store_true", help="pause speaking (at the next chunk)")
    g.add_argument("--resume", action="store_true", help="resume speaking")
    g.add_argument("--list-voices", "-L", action="store_true", help="list the daemon's voices")
    g.add_argument("--status", action="store_true", help="show the daemon's status")
    g.add_argument("--ping", action="store_true", help="check that the daemon answers")
    return p


class Client:
    def __init__(self, endpoint: str, json_out: bool, curve: security.CurveKeys | None = None) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            security.apply_client(self.sock, curve)
        self.sock.connect(endpoint)
        self.json_out = json_out
        self.audio: dict[str, list[bytes]] = {}
        self.rate: dict[str, int] = {}

    def send(self, obj: dict[str, Any]) -> None:
        self.sock.send(protocol.encode(obj))

    def recv(self, timeout_s: float) -> dict[str, Any] | None:
        if not self.sock.poll(max(0, int(timeout_s * 1000))):
            return None
        frames = self.sock.recv_multipart()
        ev: dict[str, Any] = json.loads(frames[0])
        if ev.get("event") == "pcm":
            job = str(ev.get("job"))
            if len(frames) > 1 and frames[1]:
                self.audio.setdefault(job, []).append(frames[1])
            if ev.get("rate"):
                self.rate[job] = int(ev["rate"])
            return ev
        if self.json_out:
            print(json.dumps(ev, ensure_ascii=False), flush=True)
        return dict(ev)

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def _request(client: Client, obj: dict[str, Any], timeout: float) -> tuple[int, dict[str, Any] | None]:
    token = uuid.uuid4().hex[:8]
    client.send({**obj, "req": token})
    deadline = time.monotonic() + timeout
    while True:
        ev = client.recv(deadline - time.monotonic())
        if ev is None:
            return EXIT_UNREACHABLE, None
        if ev.get("req") == token:
            return (EXIT_REJECTED if ev.get("event") == "error" else EXIT_DONE), ev


def _print_status(ev: dict[str, Any]) -> None:
    shown = {k: v for k, v in ev.items() if k not in ("event", "req")}
    for k, v in shown.items():
        print(f"{k}: {json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v}")


def _texts(args: argparse.Namespace) -> list[str]:
    if args.text:
        return [" ".join(args.text)]
    data = sys.stdin.read()
    if args.lines:
        return [line for line in data.splitlines() if line.strip()]
    return [data.strip()] if data.strip() else []


def _say(client: Client, args: argparse.Namespace, texts: list[str]) -> int:
    token_to_job: dict[str, str] = {}
    pending: set[str] = set()
    want_wait = args.wait or bool(args.output)
    outcome = EXIT_DONE
    connect_deadline = time.monotonic() + min(args.connect_timeout, args.timeout)
    deadline = time.monotonic() + args.timeout
    for text in texts:
        token = uuid.uuid4().hex[:8]
        req: dict[str, Any] = {"op": "say", "text": text, "priority": args.priority, "req": token}
        if args.voice:
            req["voice"] = args.voice
        if args.output:
            req["pcm"] = True
        client.send(req)
        token_to_job[token] = ""
        pending.add(token)
    acked: set[str] = set()
    while pending:
        limit = connect_deadline if not acked else deadline
        ev = client.recv(limit - time.monotonic())
        if ev is None:
            if not acked:
                print("ishowtts-say: the daemon did not answer", file=sys.stderr)
                return EXIT_UNREACHABLE
            print("ishowtts-say: timed out waiting for the speech to finish", file=sys.stderr)
            return EXIT_TIMEOUT
        token = str(ev.get("req"))
        if token not in token_to_job:
            continue
        name = ev.get("event")
        if name == "pcm":
            continue
        acked.add(str(token))
        if name == "queued":
            token_to_job[str(token)] = str(ev.get("job"))
            if not want_wait:
                pending.discard(str(token))
            continue
        if name in TERMINAL:
            pending.discard(str(token))
            code = TERMINAL[str(name)]
            if code != EXIT_DONE:
                reason = ev.get("reason", "")
                print(f"ishowtts-say: {name}: {ev.get('code', '')} {reason}".rstrip(), file=sys.stderr)
            outcome = max(outcome, code)
    if args.output:
        jobs = [j for j in token_to_job.values() if j]
        _write_wav(Path(args.output), client, jobs)
    return outcome


def _write_wav(path: Path, client: Client, jobs: list[str]) -> None:
    rate = next((client.rate[j] for j in jobs if j in client.rate), 22050)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        for j in jobs:
            for block in client.audio.get(j, []):
                w.writeframes(block)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    endpoint = args.endpoint or paths.control_endpoint()
    curve = None
    if args.server_key or args.client_key:
        if not (args.server_key and args.client_key):
            print("ishowtts-say: CURVE needs both --server-key and --client-key", file=sys.stderr)
            return EXIT_USAGE
        try:
            curve = security.load_client_keys(args.client_key, args.server_key)
        except (OSError, ValueError) as e:
            print(f"ishowtts-say: cannot read the CURVE keys: {e}", file=sys.stderr)
            return EXIT_USAGE
    client = Client(endpoint, args.json, curve)
    try:
        for flag, op in (
            ("stop", "stop"),
            ("cancel", "cancel"),
            ("pause", "pause"),
            ("resume", "resume"),
            ("ping", "ping"),
            ("status", "status"),
            ("list_voices", "voices"),
        ):
            if getattr(args, flag):
                code, ev = _request(client, {"op": op}, min(args.timeout, args.connect_timeout))
                if ev is None:
                    print(f"ishowtts-say: the daemon at {endpoint} did not answer", file=sys.stderr)
                    return code
                if ev.get("event") == "error":
                    print(f"ishowtts-say: error: {ev.get('code')}: {ev.get('reason')}", file=sys.stderr)
                elif not args.json:
                    if op == "voices":
                        for v in ev.get("voices", []):
                            mark = " (default)" if v.get("default") else ""
                            print(f"{v['id']}\t{v.get('engine', '')}\t{v.get('language') or ''}{mark}")
                    elif op == "status":
                        _print_status(ev)
                    elif op == "ping":
                        print("ready" if ev.get("ready") else "warming up")
                return code
        texts = _texts(args)
        if not texts:
            print(
                "ishowtts-say: nothing to say (give text as arguments or on standard input)", file=sys.stderr
            )
            return EXIT_USAGE
        return _say(client, args, texts)
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
