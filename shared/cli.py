"""The ``sse`` command (also ``python -m shared``): listen, respond, trigger.

- ``sse listen URL``: print events as they arrive; reconnects and resumes by itself.
- ``sse respond URL --client-id ID``: be a client that answers the server's requests
  (``/bidi/events``): the built-in ``analyze`` method, or any method through ``--exec CMD``.
- ``sse trigger URL --client-id ID --message TEXT``: ask a connected client (``/bidi/trigger``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import httpx

from . import jsonrpc
from .client import Backoff, Event, Responder, RpcError, Status, StreamError, SyncEventStream

__all__ = ["EXIT_CODES", "analyze", "main"]

# ``sse trigger``: one exit code per way a request can end, so scripts can tell them apart.
EXIT_CODES = {
    "ok": 0,
    "error": 1,  # connection refused, unexpected answer, ...
    "usage": 2,  # argparse's own
    404: 3,  # no such client connected
    504: 4,  # the client did not answer in time
    502: 5,  # the client answered with a JSON-RPC error
    410: 6,  # the client went away for longer than the grace period
    409: 7,  # the request was cancelled by the server
}
EXEC_FAILED = -32000  # JSON-RPC's implementation-defined range: the --exec command failed

EPILOG = """\
examples:
  sse listen http://127.0.0.1:8000/basics/events
  sse listen --json http://127.0.0.1:8000/basics/events | jq .data
  sse respond http://127.0.0.1:8000/bidi/events --client-id cli-1
  sse respond http://127.0.0.1:8000/bidi/events --client-id cli-1 --exec 'jq "{len: (.message|length)}"'
  sse trigger http://127.0.0.1:8000/bidi/trigger --client-id cli-1 --message "hello there"

exit codes of `trigger`: 0 answered, 1 error, 3 unknown client (404), 4 timed out (504),
5 the client answered with an error (502), 6 client gone (410), 7 cancelled (409)
"""


def analyze(params: Any) -> dict[str, Any]:
    """The built-in handler: a word count and a short summary of ``params.message``."""
    message = params.get("message") if isinstance(params, dict) else None
    if not isinstance(message, str):
        raise RpcError(jsonrpc.INVALID_PARAMS, 'analyze needs params {"message": "<text>"}')
    words = message.split()
    summary = " ".join(words[:12]) + (" …" if len(words) > 12 else "")
    return {"words": len(words), "characters": len(message), "summary": summary}


def exec_handler(command: str) -> Any:
    """Answer any request by running ``command`` in a shell: params as JSON on stdin, the method
    in ``$SSE_METHOD``; stdout (JSON if it parses, else text) is the result, a non-zero exit a
    JSON-RPC error carrying stderr. A cancelled request (or a passed deadline) kills the command."""

    async def run(method: str, params: Any) -> Any:
        env = {**os.environ, "SSE_METHOD": method}
        proc = await asyncio.create_subprocess_shell(
            command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # its own process group: a cancel kills the shell's children too
        )
        try:
            out, err = await proc.communicate(json.dumps(params).encode())
        except asyncio.CancelledError:  # cancelled by the server, or the deadline passed
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            raise
        if proc.returncode != 0:
            raise RpcError(
                EXEC_FAILED,
                f"command exited with status {proc.returncode}",
                {"exit_code": proc.returncode, "stderr": err.decode(errors="replace")[-2000:]},
            )
        text = out.decode(errors="replace")
        try:
            return json.loads(text)
        except ValueError:
            return text.removesuffix("\n")

    return run


# -- listen -----------------------------------------------------------------------------------


def _print_status(quiet: bool) -> Any:
    def show(status: Status) -> None:
        if quiet or status.state == "closed":
            return
        if status.state == "retrying":
            print(f"· {status.detail}; reconnecting in {status.delay:.1f} s", file=sys.stderr, flush=True)
        elif status.state == "open":
            print(f"· connected to {status.detail}", file=sys.stderr, flush=True)
        elif status.state == "failed":
            print(f"· giving up: {status.detail}", file=sys.stderr, flush=True)

    return show


def _print_event(ev: Event, as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(ev.to_dict(), ensure_ascii=False) + "\n")
    else:
        data = ev.data.replace("\n", "\n  ")
        out.write(f"[{ev.event}] {'id=' + ev.id + ' ' if ev.id else ''}{data}\n")
    out.flush()


def cmd_listen(args: argparse.Namespace) -> int:
    headers = _headers(args.header)
    try:
        stream = SyncEventStream(
            args.url,
            headers=headers,
            last_event_id=args.last_event_id,
            read_timeout=args.read_timeout or None,
            max_attempts=args.max_attempts,
            on_status=_print_status(args.quiet),
        )
    except ValueError as exc:
        print(f"sse listen: {exc}", file=sys.stderr)
        return 2
    seen = 0
    try:
        with stream:
            for ev in stream:
                if ev.is_reset and not args.quiet:
                    print("· reset: the server could not resume from our id; reload your state", file=sys.stderr)
                _print_event(ev, args.json, sys.stdout)
                seen += 1
                if args.limit and seen >= args.limit:
                    break
    except StreamError as exc:
        print(f"sse listen: {exc}", file=sys.stderr)
        return 1
    return 0


# -- respond ----------------------------------------------------------------------------------


def cmd_respond(args: argparse.Namespace) -> int:
    def say(text: str) -> None:
        print(text, flush=True)

    responder = Responder(
        args.url,
        client_id=args.client_id,
        respond_url=args.respond_url,
        headers=_headers(args.header),
        read_timeout=args.read_timeout or None,
        backoff=Backoff(),
        on_status=_print_status(args.quiet),
        on_log=say,
    )
    if args.exec:
        responder.fallback = exec_handler(args.exec)
    else:
        responder.register("analyze", analyze)
    try:
        asyncio.run(_until_stopped(responder))
    except StreamError as exc:
        print(f"sse respond: {exc}", file=sys.stderr)
        return 1
    return 0


async def _until_stopped(responder: Responder) -> None:
    """Run until the stream fails for good or SIGTERM/Ctrl-C: then handlers are cancelled, so
    commands started by ``--exec`` are killed rather than left behind."""
    task = asyncio.current_task()
    assert task is not None
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows' loop
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await responder.run()


# -- trigger ----------------------------------------------------------------------------------


def cmd_trigger(args: argparse.Namespace) -> int:
    if args.params is not None:
        try:
            params = json.loads(args.params)
        except ValueError as exc:
            print(f"sse trigger: --params is not valid JSON: {exc}", file=sys.stderr)
            return EXIT_CODES["usage"]
    elif args.message is not None:
        params = {"message": args.message}
    else:
        print("sse trigger: give --message TEXT or --params JSON", file=sys.stderr)
        return EXIT_CODES["usage"]
    body = {"client_id": args.client_id, "method": args.method, "params": params, "timeout_s": args.timeout}
    try:
        # The server answers within timeout_s (504 after it); give the network a margin on top.
        response = httpx.post(args.url, json=body, headers=_headers(args.header), timeout=args.timeout + 10)
    except httpx.HTTPError as exc:
        print(f"sse trigger: cannot reach {args.url}: {exc}", file=sys.stderr)
        return EXIT_CODES["error"]
    try:
        payload = response.json()
    except ValueError:
        payload = {"detail": response.text[:500]}
    if response.status_code == 200:
        if args.json:
            print(json.dumps(payload, ensure_ascii=False))
        else:
            print(json.dumps(payload.get("result"), indent=2, ensure_ascii=False))
            print(f"· answered by {args.client_id} in {payload.get('rtt_ms')} ms", file=sys.stderr)
        return EXIT_CODES["ok"]
    detail = payload.get("detail", "") if isinstance(payload, dict) else str(payload)
    extra = payload.get("extra") if isinstance(payload, dict) else None
    if response.status_code == 502 and isinstance(extra, dict):
        detail = f"the client answered with error {extra.get('code')}: {extra.get('message')}"
        if extra.get("data") is not None:
            detail += f"\n{json.dumps(extra['data'], ensure_ascii=False)}"
    if args.json:
        print(json.dumps(payload, ensure_ascii=False))
    print(f"sse trigger: {detail} (HTTP {response.status_code})", file=sys.stderr)
    code = EXIT_CODES.get(response.status_code, EXIT_CODES["error"])
    return code


# -- plumbing ---------------------------------------------------------------------------------


def _headers(values: Sequence[str] | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values or []:
        name, sep, content = value.partition(":")
        if not sep or not name.strip():
            raise SystemExit(f"sse: a header is 'Name: value', got {value!r}")
        headers[name.strip()] = content.strip()
    return headers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sse",
        description="Listen to Server-Sent Events, answer a server's requests, or send one.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{listen,respond,trigger}")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-H", "--header", action="append", metavar="'NAME: VALUE'", help="extra request header")

    streaming = argparse.ArgumentParser(add_help=False)
    streaming.add_argument(
        "--read-timeout",
        type=float,
        default=45.0,
        metavar="S",
        help="reconnect when nothing (not even a heartbeat) arrives for S seconds; 0: never (default: 45)",
    )
    streaming.add_argument("-q", "--quiet", action="store_true", help="no connection messages on stderr")

    p = sub.add_parser(
        "listen", parents=[common, streaming], help="print events as they arrive (reconnects and resumes)"
    )
    p.add_argument("url", help="an SSE URL, e.g. http://127.0.0.1:8000/basics/events")
    p.add_argument("--json", action="store_true", help='one JSON object per event: {"event", "id", "data"}')
    p.add_argument("--last-event-id", metavar="ID", help="resume after this id")
    p.add_argument("-n", "--limit", type=int, default=0, metavar="N", help="exit after N events")
    p.add_argument("--max-attempts", type=int, default=None, metavar="N", help="give up after N failed attempts")
    p.set_defaults(run=cmd_listen)

    p = sub.add_parser("respond", parents=[common, streaming], help="answer the server's requests as a client")
    p.add_argument("url", help="the events URL, e.g. http://127.0.0.1:8000/bidi/events")
    p.add_argument("--client-id", metavar="ID", help="the client id to claim (default: the server picks one)")
    p.add_argument("--respond-url", metavar="URL", help="where answers are POSTed (default: the sibling /respond)")
    p.add_argument(
        "--exec",
        metavar="CMD",
        help="answer every request by running CMD in a shell: params JSON on stdin, stdout is the result, "
        "a non-zero exit an error ($SSE_METHOD names the method); default: the built-in 'analyze' method",
    )
    p.set_defaults(run=cmd_respond)

    p = sub.add_parser("trigger", parents=[common], help="send a request to a connected client, print the answer")
    p.add_argument("url", help="the trigger URL, e.g. http://127.0.0.1:8000/bidi/trigger")
    p.add_argument("--client-id", required=True, metavar="ID", help="the client to ask")
    p.add_argument("--message", metavar="TEXT", help='sent as params {"message": TEXT}')
    p.add_argument("--params", metavar="JSON", help="send these params instead of --message")
    p.add_argument("--method", default="analyze", metavar="M", help="the method to call (default: analyze)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S", help="seconds to wait (default: 30)")
    p.add_argument("--json", action="store_true", help="print the server's whole JSON answer")
    p.set_defaults(run=cmd_trigger)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
