"""The loop inside a handler process (`python -m eventd.runtimes.bootstrap`), like awslambdaric's.

Init once (apply the memory limit, import the user's module), say `ready`, then run one invocation
at a time until told to stop or the socket closes. Imports only the standard library, msgpack and
orjson, so a cold start costs one interpreter start plus the user's own imports.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import json
import os
import resource
import select
import socket
import sys
import threading
import time
from importlib import import_module
from typing import Any

import msgpack
import orjson

from eventd.runtimes.context import LambdaContext
from eventd.runtimes.protocol import IPC_FD_ENV, MAX_RESPONSE_BYTES, MEMORY_ENV, sqs_event

_THIS_FILE = __file__
#: whether the last invocation put a trace id in the environment
_trace_set = "_X_AMZN_TRACE_ID" in os.environ
_IMPORTLIB_FILE = importlib.__file__
#: Bytes of handler output buffered before a log frame is sent even without a newline.
_LOG_CHUNK = 4096


class Channel:
    """Blocking msgpack messaging over the inherited socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        # a 64 KiB starting buffer instead of msgpack's 1 MiB, which would all become resident
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=64 * 1024 * 1024, read_size=64 * 1024)
        self._packer = msgpack.Packer()
        #: held while sending, so frames from the raw-output thread never interleave with the main thread's
        self.lock = threading.RLock()

    def send(self, message: dict[str, Any]) -> None:
        with self.lock:
            self._sock.sendall(self._packer.pack(message))

    def receive(self) -> dict[str, Any] | None:
        while True:
            for message in self._unpacker:
                return message  # type: ignore[no-any-return]
            data = self._sock.recv(65536)
            if not data:
                return None
            self._unpacker.feed(data)


class LogStream(io.TextIOBase):
    """stdout/stderr replacement: whole lines go to the daemon as log frames, in order with results."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._buffer: list[str] = []
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._buffer.append(text)
        self._size += len(text)
        if "\n" in text or self._size >= _LOG_CHUNK:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            data = "".join(self._buffer)
            self._buffer.clear()
            self._size = 0
            self._channel.send({"t": "log", "d": data})


class RawOutput:
    """Output written straight to fds 1 and 2 (C extensions, os.write, child processes).

    The fds point at a pipe that a small thread forwards as log frames. Before each result the main
    thread drains the pipe itself, under the channel lock, so an invocation's output always reaches
    the daemon before its result does.
    """

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        read_end, write_end = os.pipe()
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.close(write_end)
        os.set_blocking(read_end, False)
        self._fd = read_end
        threading.stack_size(256 * 1024)  # its stack counts against the memory limit: keep it small
        threading.Thread(target=self._forward, name="eventd-raw-output", daemon=True).start()

    def _forward(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while True:
            poller.poll()
            self.drain()

    def drain(self) -> None:
        with self._channel.lock:
            chunks = []
            while True:
                try:
                    data = os.read(self._fd, 65536)
                except BlockingIOError:
                    break
                if not data:
                    break
                chunks.append(data)
            if chunks:
                text = b"".join(chunks).decode(errors="replace")
                self._channel.send({"t": "log", "d": text})


def main() -> None:
    memory_mb = int(os.environ.pop(MEMORY_ENV, "0"))
    if memory_mb:
        # RLIMIT_DATA counts private writable mappings (heap, anonymous mmap), touched or not, but not
        # shared libraries, code or PROT_NONE reservations (thread arenas), so it tracks what Lambda
        # calls memory far better than RLIMIT_AS. The interpreter itself takes about 15 MB of it.
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    # The daemon wakes a handler by writing its request, then goes on dispatching others. Under the
    # default policy the woken handler preempts it on the spot; SCHED_BATCH (no privilege needed)
    # lets the daemon keep its CPU while the handler runs beside it. Measured on the HTTP route
    # benchmark: 5 of 6 interleaved runs faster, about 10% less handler CPU per request.
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    channel = Channel(socket.socket(fileno=int(os.environ.pop(IPC_FD_ENV))))
    log = LogStream(channel)
    sys.stdout = sys.stderr = log
    raw = RawOutput(channel)

    started = time.perf_counter()
    handler, init_error = _load_handler(os.environ["_HANDLER"], os.environ.get("LAMBDA_TASK_ROOT"))
    init_ms = (time.perf_counter() - started) * 1000
    log.flush()
    raw.drain()
    if init_error is not None:
        channel.send({"t": "init_error", "error": init_error, "init_ms": init_ms})
        return
    channel.send({"t": "ready", "init_ms": init_ms})
    while True:
        message = channel.receive()
        if message is None or message["t"] == "stop":
            return
        reply, fatal = _invoke(handler, message)
        log.flush()
        raw.drain()
        reply["rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        channel.send(reply)
        if fatal:
            # A MemoryError can leave the interpreter half-broken; a fresh process is the safe answer.
            os._exit(70)


def _load_handler(spec: str, task_root: str | None) -> tuple[Any, dict[str, Any] | None]:
    if task_root:
        sys.path.insert(0, task_root)
    module_name, _, function_name = spec.rpartition(".")
    if not module_name:
        return None, _fault("Runtime.MalformedHandlerName", f"Bad handler '{spec}': not enough values to unpack")
    try:
        module = import_module(module_name.replace("/", "."))
    except ImportError as exc:
        return None, _fault("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}")
    except SyntaxError as exc:
        return None, _fault(
            "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {exc}", _stack(exc)
        )
    except MemoryError:
        return None, _fault("Runtime.OutOfMemory", "Out of memory while importing the handler's module")
    except BaseException as exc:  # noqa: BLE001 - any failure of the user's init code is reported, not raised
        return None, _error_of(exc)
    handler = getattr(module, function_name, None)
    if handler is None:
        return None, _fault("Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'")
    return handler, None


def _invoke(handler: Any, message: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    request_id = message["id"]
    global _trace_set
    if message.get("trace_id"):
        os.environ["_X_AMZN_TRACE_ID"] = message["trace_id"]
        _trace_set = True
    elif _trace_set:  # only undo what an earlier invocation set: os.environ.pop costs a failed lookup
        os.environ.pop("_X_AMZN_TRACE_ID", None)
        _trace_set = False
    try:
        sqs = message.get("sqs")
        if sqs is not None:
            event = sqs_event(*sqs)
        else:
            raw = message["payload"]
            event = _loads(raw) if raw else {}
    except ValueError as exc:
        return {"t": "error", "error": _fault("Runtime.UnmarshalError", f"Unable to unmarshal input: {exc}")}, False
    context = LambdaContext(request_id, message["arn"], message["deadline_ms"], message.get("client_context"))
    try:
        result = handler(event, context)
        if hasattr(result, "__await__"):
            result = _run_awaitable(result)
    except MemoryError:
        error = _fault("Runtime.OutOfMemory", "Runtime exited with error: out of memory")
        return {"t": "error", "error": {**error, "requestId": request_id}, "fatal": True}, True
    except SystemExit:
        # sys.exit() ends the process, as in Lambda; the daemon reports Runtime.ExitError.
        sys.stdout.flush()
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure of user code becomes an error reply
        return {"t": "error", "error": {**_error_of(exc), "requestId": request_id}}, False
    try:
        payload = json.dumps(result).encode()
    except (TypeError, ValueError) as exc:
        return {"t": "error", "error": _fault("Runtime.MarshalError", f"Unable to marshal response: {exc}")}, False
    if len(payload) > MAX_RESPONSE_BYTES:
        error = _fault(
            "Function.ResponseSizeTooLarge",
            f"Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
        )
        return {"t": "error", "error": error}, False
    return {"t": "result", "payload": payload}, False


#: Digits to "0", everything else to " ": 19 zeros in a row after translate() mark a number orjson
#: may read as a float (an integer beyond 64 bits). translate and `in` are ten times a regex's speed.
_DIGITS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_NUMBER = b"0" * 19


def _loads(raw: bytes) -> Any:
    """The event exactly as json.loads (the Lambda Python runtime's parser) gives it, via orjson when
    that is sure to agree: orjson parses a no-op's event in a third of the time, but reads integers
    beyond 64 bits as floats and refuses NaN, Infinity and lone surrogates, which json accepts."""
    if _LONG_NUMBER not in raw.translate(_DIGITS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


@functools.cache
def _event_loop() -> Any:
    """One event loop for the process's life, so clients an `async def` handler opened in init or an
    earlier invocation stay usable. asyncio is imported here: a plain `def` handler never pays for it."""
    import asyncio

    return asyncio.new_event_loop()


def _run_awaitable(awaitable: Any) -> Any:
    return _event_loop().run_until_complete(awaitable)


def _fault(error_type: str, message: str, stack: list[str] | None = None) -> dict[str, Any]:
    return {"errorMessage": message, "errorType": error_type, "stackTrace": stack or []}


def _error_of(exc: BaseException) -> dict[str, Any]:
    return {"errorMessage": str(exc), "errorType": type(exc).__name__, "stackTrace": _stack(exc)}


def _stack(exc: BaseException) -> list[str]:
    import traceback  # only on errors: it pulls in linecache and friends

    # the user's frames only: not this loop's, nor the import machinery's
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__)
        if f.filename not in (_THIS_FILE, _IMPORTLIB_FILE) and not f.filename.startswith("<frozen importlib")
    ]
    return traceback.format_list(frames)


if __name__ == "__main__":
    main()
