"""The `eventd` command: parses arguments, calls the library, maps outcomes to exit codes.

Every failure is one readable line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from eventd import __version__
from eventd.client import DEFAULT_URL, DaemonUnreachable, call

EXIT_OK = 0
#: a function error, an unreachable daemon, or a refused request
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: EX_CONFIG from sysexits.h; the systemd unit lists it in RestartPreventExitStatus
EXIT_CONFIG = 78

#: The config `eventd run` uses when given none: one `hello` function shipped inside the package.
EMBEDDED_CONFIG = Path(__file__).parent / "examples" / "eventd.yaml"


class CliError(Exception):
    """A failure to report as one line, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except CliError as exc:
        print(f"eventd: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eventd", description="A self-hosted, Lambda-style event router.")
    parser.add_argument("--version", action="version", version=f"eventd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", help="config file (default: $EVENTD_CONFIG, else the embedded example)")
    run.set_defaults(handler=cmd_run)

    check = commands.add_parser("check", help="validate a config file; exit 0 or 78 with every problem")
    check.add_argument("file")
    check.set_defaults(handler=cmd_check)

    schema = commands.add_parser("schema", help="print the config's JSON Schema")
    schema.set_defaults(handler=cmd_schema)

    invoke = commands.add_parser("invoke", help="invoke a function on the running daemon and print the result")
    invoke.add_argument("name")
    payload = invoke.add_mutually_exclusive_group()
    payload.add_argument("--payload", help="JSON event (default {})")
    payload.add_argument("--payload-file", help="file holding the JSON event ('-' for stdin)")
    invoke.add_argument("--log", action="store_true", help="also print the invocation's log tail on stderr")
    invoke.add_argument("--async", dest="is_async", action="store_true",
                        help="invoke asynchronously: print the request id once the event is stored")
    _daemon_options(invoke)
    invoke.set_defaults(handler=cmd_invoke)

    dlq = commands.add_parser("dlq", help="inspect and redrive dead-letter (and destination) queues")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dlq_list = dlq_commands.add_parser("list", help="list the messages of a queue, oldest first")
    dlq_list.add_argument("queue")
    dlq_list.add_argument("--limit", type=_positive, default=50)
    dlq_list.add_argument("--json", action="store_true", help="print the raw JSON")
    dlq_show = dlq_commands.add_parser("show", help="show one message in full")
    dlq_show.add_argument("queue")
    dlq_show.add_argument("id")
    dlq_redrive = dlq_commands.add_parser("redrive", help="send messages back to their function (or --to)")
    dlq_redrive.add_argument("queue")
    dlq_redrive.add_argument("--to", metavar="FUNCTION", help="invoke this function instead of the original")
    dlq_redrive.add_argument("--limit", type=_positive, help="redrive at most this many")
    dlq_purge = dlq_commands.add_parser("purge", help="delete every message of a queue")
    dlq_purge.add_argument("queue")
    for sub in (dlq_list, dlq_show, dlq_redrive, dlq_purge):
        _daemon_options(sub)
    dlq.set_defaults(handler=cmd_dlq)

    send = commands.add_parser("send", help="send messages to a queue; prints their ids once stored")
    send.add_argument("queue")
    body = send.add_mutually_exclusive_group(required=True)
    body.add_argument("--body", help="the message body")
    body.add_argument("--file", help="read the body from a file ('-' for stdin)")
    send.add_argument("--lines", action="store_true", help="with --file: one message per non-empty line")
    send.add_argument("--delay", help="keep the messages invisible this long (like 5s)")
    _daemon_options(send)
    send.set_defaults(handler=cmd_send)

    put = commands.add_parser("put", help="put a record on a stream; prints its shard and sequence number")
    put.add_argument("stream")
    put.add_argument("--key", required=True, help="partition key: records with one key stay in order")
    data = put.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", help="the record's data")
    data.add_argument("--file", help="read the data from a file ('-' for stdin)")
    _daemon_options(put)
    put.set_defaults(handler=cmd_put)

    queue = commands.add_parser("queue", help="queue depths, a look at messages, purge")
    queue_commands = queue.add_subparsers(dest="queue_command", required=True, metavar="ACTION")
    queue_stats = queue_commands.add_parser("stats", help="messages by state in every queue")
    queue_peek = queue_commands.add_parser("peek", help="show messages without receiving them")
    queue_peek.add_argument("queue")
    queue_peek.add_argument("--limit", type=_positive, default=10)
    queue_purge = queue_commands.add_parser("purge", help="delete every message of a queue")
    queue_purge.add_argument("queue")
    for sub in (queue_stats, queue_peek, queue_purge):
        _daemon_options(sub)
    queue.set_defaults(handler=cmd_queue)

    status = commands.add_parser("status", help="functions, processes and concurrency of the running daemon")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    _daemon_options(status)
    status.set_defaults(handler=cmd_status)
    return parser


def _daemon_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", help="find the daemon through this config's `listen`")
    parser.add_argument("--url", help=f"the daemon's URL (default: $EVENTD_URL, else {DEFAULT_URL})")


def daemon_url(args: argparse.Namespace) -> str:
    if args.url:
        return _checked_url(str(args.url), "--url")
    if args.config:
        from eventd.config.model import parse_listen

        host, port = parse_listen(_load(args.config).listen)
        # a wildcard listen address is reachable on loopback; an IPv6 host needs brackets in a URL
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    if os.environ.get("EVENTD_URL"):
        return _checked_url(os.environ["EVENTD_URL"], "EVENTD_URL")
    return DEFAULT_URL


def _checked_url(url: str, source: str) -> str:
    """`url` if it is an http(s) URL with a host; a usage error naming where it came from otherwise."""
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a malformed IPv6 host, or a port that is not a number below 65536
        valid = False
    if not valid:
        raise CliError(f"{source} {url!r} is not a URL like {DEFAULT_URL}", EXIT_USAGE)
    return url


def _load(path: str | Path) -> Any:
    from eventd.config import ConfigError, load

    try:
        return load(path)
    except ConfigError as exc:
        if len(exc.problems) == 1:
            # one problem (like an unreadable file) is one line; it already names the file
            raise CliError(str(exc), EXIT_CONFIG) from None
        header = f"{path} is not a valid config ({len(exc.problems)} problems):"
        raise CliError(f"{header}\n{exc}", EXIT_CONFIG) from None


def cmd_run(args: argparse.Namespace) -> int:
    from eventd import daemon

    path = args.config or os.environ.get("EVENTD_CONFIG")
    if path:
        config = _load(path)
        name = str(path)
    else:
        config = _load(EMBEDDED_CONFIG)
        # the package folder may be read-only: keep state where systemd or the user's XDG dirs say
        state = os.environ.get("STATE_DIRECTORY") or os.path.join(
            os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "eventd"
        )
        config = config.model_copy(update={"state_dir": Path(state)})
        name = "embedded example"
    return daemon.run(config, name)


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.file)
    count = len(config.functions)
    print(f"{args.file}: ok ({count} function{'' if count == 1 else 's'})")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from eventd.config import json_schema

    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def cmd_invoke(args: argparse.Namespace) -> int:
    payload = _read_payload(args)
    headers = {"Content-Type": "application/json"}
    if args.is_async:
        headers["X-Amz-Invocation-Type"] = "Event"
    if args.log:
        headers["X-Amz-Log-Type"] = "Tail"
    reply = _call(args, "POST", f"/2015-03-31/functions/{quote(args.name, safe='')}/invocations", payload, headers)
    if reply.status >= 400:
        raise CliError(_api_error(reply))
    if args.is_async:
        print(reply.headers.get("x-amzn-RequestId", ""))
        return EXIT_OK
    if args.log and "X-Amz-Log-Result" in reply.headers:
        import base64

        sys.stderr.write(base64.b64decode(reply.headers["X-Amz-Log-Result"]).decode(errors="replace"))
    body = reply.body.decode(errors="replace")
    if "X-Amz-Function-Error" in reply.headers:
        try:
            error = json.loads(body)
            print(f"eventd: {args.name} failed: {error.get('errorType')}: {error.get('errorMessage')}",
                  file=sys.stderr)
        except (ValueError, AttributeError):
            print(f"eventd: {args.name} failed: {body}", file=sys.stderr)
        print(body)
        return EXIT_FAILURE
    print(body)
    return EXIT_OK


def _read_payload(args: argparse.Namespace) -> bytes:
    if args.payload_file:
        try:
            data = sys.stdin.buffer.read() if args.payload_file == "-" else Path(args.payload_file).read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read {args.payload_file}: {exc.strerror}", EXIT_USAGE) from None
    else:
        data = (args.payload if args.payload is not None else "{}").encode()
    try:
        json.loads(data or b"{}")
    except ValueError as exc:
        raise CliError(f"the payload is not JSON: {exc}", EXIT_USAGE) from None
    return data


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, found {text!r}")
    return int(text)


def cmd_dlq(args: argparse.Namespace) -> int:
    queue = quote(args.queue, safe="")
    if args.dlq_command == "list":
        reply = _call(args, "GET", f"/admin/queues/{queue}/messages?limit={args.limit}")
        body = _admin_json(reply)
        if args.json:
            print(json.dumps(body, indent=2))
            return EXIT_OK
        print(f"{body['queue']}: {body['depth']} messages" + (f" (showing {len(body['messages'])})"
                                                             if body["depth"] > len(body["messages"]) else ""))
        rows = [("ID", "SENT", "FUNCTION", "REQUEST ID", "CONDITION", "ERROR")]
        for m in body["messages"]:
            error = (m.get("error_message") or "")[:60]
            rows.append((m["id"], m["sent_at"], m.get("function") or "-", m.get("request_id") or "-",
                         m.get("condition") or "-", error))
        _print_table(rows)
    elif args.dlq_command == "show":
        reply = _call(args, "GET", f"/admin/queues/{queue}/messages/{quote(args.id, safe='')}")
        print(json.dumps(_admin_json(reply), indent=2))
    elif args.dlq_command == "redrive":
        options: dict[str, Any] = {"to": args.to, "limit": args.limit}
        body = json.dumps({k: v for k, v in options.items() if v is not None}).encode()
        result = _admin_json(_call(args, "POST", f"/admin/queues/{queue}/redrive", body,
                                   {"Content-Type": "application/json"}))
        targets = ", ".join(f"{n} to {f}" for f, n in sorted(result["to"].items())) or "none"
        print(f"redriven {result['redriven']} from {result['queue']} ({targets})")
        for skipped in result["skipped"]:
            print(f"skipped {skipped['id']}: {skipped['reason']}", file=sys.stderr)
    else:
        return _purge(args, args.queue)
    return EXIT_OK


def _purge(args: argparse.Namespace, queue: str) -> int:
    result = _admin_json(_call(args, "DELETE", f"/admin/queues/{quote(queue, safe='')}/messages"))
    print(f"purged {result['purged']} messages from {result['queue']}")
    return EXIT_OK


def _read_text(path: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}", EXIT_USAGE) from None


def cmd_send(args: argparse.Namespace) -> int:
    if args.lines and not args.file:
        raise CliError("--lines goes with --file", EXIT_USAGE)
    text = args.body if args.body is not None else _read_text(args.file)
    bodies = [line for line in text.splitlines() if line.strip()] if args.lines else [text]
    extra = {"delay": args.delay} if args.delay else {}
    queue = quote(args.queue, safe="")
    for start in range(0, len(bodies), 500):  # the producer API takes 500 messages a request
        chunk = [{"body": body, **extra} for body in bodies[start:start + 500]]
        reply = _call(args, "POST", f"/queues/{queue}/messages", json.dumps({"messages": chunk}).encode(),
                      {"Content-Type": "application/json"})
        for message in _admin_json(reply)["messages"]:
            print(message["id"])
    return EXIT_OK


def cmd_put(args: argparse.Namespace) -> int:
    data = args.data if args.data is not None else _read_text(args.file)
    body = json.dumps({"partition_key": args.key, "data": data}).encode()
    reply = _call(args, "POST", f"/streams/{quote(args.stream, safe='')}/records", body,
                  {"Content-Type": "application/json"})
    result = _admin_json(reply)
    print(f"{result['shard_id']} {result['sequence_number']}")
    return EXIT_OK


def cmd_queue(args: argparse.Namespace) -> int:
    if args.queue_command == "stats":
        queues = _admin_json(_call(args, "GET", "/admin/queues"))["queues"]
        rows = [("QUEUE", "DEPTH", "VISIBLE", "IN FLIGHT", "DELAYED", "OLDEST", "DEAD LETTER")]
        for q in queues:
            depth = q["visible"] + q["in_flight"] + q["delayed"]
            rows.append((q["queue"], str(depth), str(q["visible"]), str(q["in_flight"]), str(q["delayed"]),
                         f"{q['oldest_age_seconds']:.0f}s", q["dead_letter"] or "-"))
        _print_table(rows)
    elif args.queue_command == "peek":
        queue = quote(args.queue, safe="")
        listing = _admin_json(_call(args, "GET", f"/admin/queues/{queue}/messages?limit={args.limit}"))
        for entry in listing["messages"]:
            shown = _admin_json(_call(args, "GET", f"/admin/queues/{queue}/messages/{entry['id']}"))
            print(json.dumps({k: shown[k] for k in ("id", "sent_at", "receive_count", "attributes", "body")}))
    else:
        return _purge(args, args.queue)
    return EXIT_OK


def _admin_json(reply: Any) -> Any:
    if reply.status != 200:
        raise CliError(_api_error(reply))
    try:
        return reply.json()
    except ValueError:
        raise CliError(f"the daemon answered something that is not JSON (HTTP {reply.status})") from None


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def cmd_status(args: argparse.Namespace) -> int:
    reply = _call(args, "GET", "/admin/status")
    if reply.status != 200:
        raise CliError(_api_error(reply))
    try:
        status = reply.json()
    except ValueError:
        # --url or EVENTD_URL names some other HTTP server
        raise CliError(f"{daemon_url(args)} did not answer like eventd (its status is not JSON)") from None
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    print(f"eventd {status['version']}  up {status['uptime_seconds']:.0f}s  "
          f"concurrency {status['concurrency_in_use']}/{status['max_concurrency']}")
    rows = [("FUNCTION", "HANDLER", "IDLE", "BUSY", "STARTING", "IN USE", "CAP", "WARM")]
    for fn in status["functions"]:
        p = fn["processes"]
        cap = f"{fn['concurrency_limit']}" + ("" if fn["reserved"] is not None else " (shared)")
        rows.append((fn["name"], fn["handler"], str(p["idle"]), str(p["busy"]), str(p["starting"]),
                     str(fn["concurrency_in_use"]), cap, str(fn["warm"])))
    _print_table(rows)
    if status.get("mappings"):
        print()
        rows = [("MAPPING", "SOURCE", "FUNCTION", "STATE")]
        for m in status["mappings"]:
            rows.append((m["name"], m["source"], m["function"], "enabled" if m["enabled"] else "disabled"))
        _print_table(rows)
    if status.get("schedules"):
        print()
        rows = [("SCHEDULE", "EXPRESSION", "TIMEZONE", "FUNCTION", "NEXT FIRE")]
        for sch in status["schedules"]:
            rows.append((sch["name"], sch["expression"], sch["timezone"], sch["function"], sch["next_fire"] or "-"))
        _print_table(rows)
    if status.get("watches"):
        print()
        rows = [("WATCH", "PATH", "MODE", "FUNCTION")]
        for watch in status["watches"]:
            rows.append((watch["name"], watch["path"], watch["mode"], watch["function"]))
        _print_table(rows)
    for fn in status["functions"]:
        if fn.get("last_init_error"):
            error = fn["last_init_error"]
            print(f"! {fn['name']}: init failed: {error.get('errorType')}: {error.get('errorMessage')}")
    return EXIT_OK


def _call(args: argparse.Namespace, method: str, path: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> Any:
    try:
        return call(daemon_url(args), method, path, body, headers)
    except DaemonUnreachable as exc:
        raise CliError(f"{exc} (is it running? start it with `eventd run`)") from None


def _api_error(reply: Any) -> str:
    code = reply.headers.get("x-amzn-ErrorType") or reply.headers.get("X-Amzn-Errortype") or f"HTTP {reply.status}"
    try:
        body = json.loads(reply.body)
        message = body.get("message") or body.get("Message") or reply.body.decode()
    except (ValueError, AttributeError):
        message = reply.body.decode(errors="replace")
    return f"{code}: {message}"
