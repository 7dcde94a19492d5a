"""``ishowtts-say``: speak text through the daemon (modelled on speech-dispatcher's ``spd-say``)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ishowttsd import paths, protocol, security
from ishowttsd.cli.conn import Client, unreachable
from ishowttsd.cli.speak import (
    EXIT_CANCELLED,
    EXIT_DONE,
    EXIT_OUTPUT,
    EXIT_REJECTED,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Options,
    Speaker,
)
from ishowttsd.cli.split import DEFAULT_PART_CHARS
from ishowttsd.cli.wavout import OutputError, WavOut

EPILOG = f"""\
long text:
  Text over {DEFAULT_PART_CHARS} characters (a file piped in, say) is cut into several jobs at paragraph
  and sentence boundaries (under the daemon's limit), spoken in order. They are sent a few at a
  time, so without --wait ishowtts-say stays until the last one is queued; --wait waits for all;
  -o writes them all into one WAV. --timeout applies to each job, beyond its estimated speech.

exit codes:
  {EXIT_DONE}  done (or, without --wait, queued); control commands acknowledged
  {EXIT_USAGE}  usage error (also: empty text, standard input not UTF-8, an -o file that cannot be written)
  {EXIT_CANCELLED}  the job was cancelled or stopped
  {EXIT_REJECTED}  the job was dropped or rejected, or the daemon answered with an error
  {EXIT_TIMEOUT}  --timeout passed before the job finished
  {EXIT_UNREACHABLE}  the daemon did not answer (not running, or the endpoint is wrong), or went away
     while we waited (the audio received so far stays in the -o file)
  {EXIT_OUTPUT}  the -o file could not be written to the end (a full disk): the speech went on

The daemon's control endpoint is $ISHOWTTS_CONTROL, else {paths.default_endpoint("control")}.
"""


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (argparse turns the error into a usage error)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive, finite number of seconds")
    return v


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
        type=_seconds,
        default=60.0,
        metavar="S",
        help="seconds to wait for each job beyond its estimated speech (default 60)",
    )
    p.add_argument(
        "--connect-timeout",
        type=_seconds,
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


def _request(client: Client, obj: dict[str, Any], timeout: float) -> tuple[int, dict[str, Any] | None]:
    token = uuid.uuid4().hex[:8]
    client.send({**obj, "req": token})
    deadline = time.monotonic() + timeout
    while True:
        got = client.recv(deadline - time.monotonic())
        if got is None:
            return EXIT_UNREACHABLE, None
        ev = got[0]
        if ev.get("req") == token:
            return (EXIT_REJECTED if ev.get("event") == "error" else EXIT_DONE), ev


def _print_status(ev: dict[str, Any]) -> None:
    shown = {k: v for k, v in ev.items() if k not in ("event", "req")}
    for k, v in shown.items():
        print(f"{k}: {json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v}")


def _texts(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """The texts to speak (usage errors exit here): the arguments, else standard input, which
    must be UTF-8 text."""
    if args.text:
        text = " ".join(args.text)
        if not text.strip():
            parser.error("the text is empty")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            parser.error("the text arguments are not valid UTF-8")
        return [text]
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        parser.error(
            f"standard input is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "convert it first, e.g. with iconv -t UTF-8"
        )
    if "\x00" in text:
        parser.error("standard input holds NUL bytes: that is binary data, not text")
    if args.lines:
        return [line for line in text.splitlines() if line.strip()]
    return [text] if text.strip() else []


def _open_output(args: argparse.Namespace, parser: argparse.ArgumentParser) -> WavOut | None:
    if not args.output:
        return None
    try:
        return WavOut(Path(args.output))
    except OutputError as e:
        parser.error(f"-o: {e}")


CONTROL_OPS = (
    ("stop", "stop"),
    ("cancel", "cancel"),
    ("pause", "pause"),
    ("resume", "resume"),
    ("ping", "ping"),
    ("status", "status"),
    ("list_voices", "voices"),
)


def _control(client: Client, args: argparse.Namespace, op: str) -> int:
    waited = min(args.timeout, args.connect_timeout)
    code, ev = _request(client, {"op": op}, waited)
    if ev is None:
        print(f"ishowtts-say: {unreachable(client.endpoint, waited)}", file=sys.stderr)
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.voice is not None and not args.voice.strip():
        parser.error("--voice is empty (see --list-voices)")
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
    op = next((op for flag, op in CONTROL_OPS if getattr(args, flag)), None)
    texts: list[str] = []
    out = None
    if op is None:
        texts = _texts(args, parser)
        if not texts:
            parser.error("nothing to say (give text as arguments or on standard input)")
        out = _open_output(args, parser)  # before anything is sent: a bad -o speaks nothing
    client = Client(endpoint, args.json, curve)
    try:
        if op is not None:
            return _control(client, args, op)
        opts = Options(
            priority=args.priority,
            voice=args.voice,
            wait=args.wait,
            timeout_s=args.timeout,
            connect_timeout_s=args.connect_timeout,
        )
        return Speaker(client, texts, opts, out).run()
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
