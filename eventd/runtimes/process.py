"""The daemon's side of one handler process: spawn, init handshake, one invocation at a time, kill.

Everything that can go wrong inside the process (exceptions, crashes, hangs, memory blow-ups, garbage
on the socket) ends here as an `Outcome` with a Lambda error object; nothing is raised to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from eventd.runtimes.launch import DirectLauncher, Launched, Launcher
from eventd.runtimes.protocol import MEMORY_ENV, SqsFields

#: Lambda's init phase limit (lambda-semantics.md §8.1).
INIT_TIMEOUT_S = 10.0
#: How long a process asked to stop may take before it is killed.
STOP_GRACE_S = 1.0

#: One packer for every invoke frame (msgpack.packb builds a new one, buffer and all, per call);
#: the event loop is single-threaded, so sharing it is safe.
_PACKER = msgpack.Packer()
#: starting receive buffer of a handler process's channel (see _Channel)
_FRAME_BUFFER = 64 * 1024

#: Called with (function, request_id or None, text) for every piece of handler output.
OutputSink = Callable[[str | None, str], None]


class ProcessState(enum.StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    DEAD = "dead"


@dataclass(slots=True)
class InvokeRequest:
    request_id: str
    #: the event: JSON, or an SQS batch's fields (the handler process builds the event)
    payload: bytes | SqsFields
    invoked_arn: str
    timeout_s: float
    client_context: dict[str, Any] | None = None
    trace_id: str | None = None


@dataclass
class Outcome:
    """How an init or an invocation ended. `error` is Lambda's error object, None on success."""

    payload: bytes | None = None
    error: dict[str, Any] | None = None
    #: "timeout" and "crash" cost the process; "error" (a handled exception) does not
    status: str = "success"
    duration_ms: float = 0.0
    max_memory_mb: int = 0
    output: list[str] = field(default_factory=list)


@dataclass
class SpawnSpec:
    """Everything needed to start a process of one function."""

    function: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    memory_mb: int


class _Channel(asyncio.Protocol):
    """Feeds socket bytes to a msgpack Unpacker and hands whole messages to the process object."""

    def __init__(self, owner: HandlerProcess) -> None:
        self._owner = owner
        # read_size is also the starting buffer (1 MiB by default). Each message moves the write
        # position forward until the buffer is full, so a default buffer ends up resident: 1 MiB of
        # daemon memory per handler process. 64 KiB holds every usual frame; bigger ones grow the buffer.
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=64 * 1024 * 1024, read_size=_FRAME_BUFFER)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._unpacker.feed(data)
        try:
            for message in self._unpacker:
                self._owner._on_message(message)
        except (ValueError, msgpack.UnpackException, TypeError, KeyError) as exc:
            self._owner._on_garbage(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._on_eof()


class HandlerProcess:
    """One long-lived handler process. Not safe for two invocations at once: the pool guarantees that."""

    _next_id = 0

    def __init__(self, spec: SpawnSpec, sink: OutputSink, launcher: Launcher | None = None) -> None:
        HandlerProcess._next_id += 1
        self.pid = 0
        self.number = HandlerProcess._next_id
        self.spec = spec
        self.state = ProcessState.STARTING
        self.idle_since = time.monotonic()
        self.init_ms = 0.0
        self.invocations = 0
        self._sink = sink
        self._launcher: Launcher = launcher or DirectLauncher()
        self._proc: Launched | None = None
        self._channel: _Channel | None = None
        #: watches the channel for the process hanging up (see hung_up)
        self._hangup: select.poll | None = None
        #: the channel's socket, also held by the transport (which closes it): see _send
        self._sock: socket.socket | None = None
        self._waiter: asyncio.Future[dict[str, Any]] | None = None
        self._output: list[str] = []
        self._request_id: str | None = None
        self._killed_by_us = False
        self._exit_reason: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def alive(self) -> bool:
        return self.state is not ProcessState.DEAD

    def hung_up(self) -> bool:
        """True when the process has closed its end of the channel (it died) even if the event loop
        has not yet delivered that EOF: an idle process killed a moment ago must not be handed out."""
        if self._hangup is None or self.state is ProcessState.DEAD:
            return True
        # a zero-timeout poll for the peer's hang-up only: output the process wrote while idle is no sign
        return bool(self._hangup.poll(0))

    async def start(self) -> Outcome:
        """Spawn and run init. On failure the process is gone and the outcome carries the init error."""
        loop = asyncio.get_running_loop()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = {**self.spec.env, MEMORY_ENV: str(self.spec.memory_mb)}
        started = time.perf_counter()
        self._waiter = loop.create_future()
        try:
            self._proc = await self._launcher.launch(self.spec.argv, env, self.spec.cwd, child.fileno())
        except OSError as exc:
            parent.close()
            self.state = ProcessState.DEAD
            return Outcome(error=_fault("Runtime.InvalidEntrypoint", f"Could not start the runtime: {exc}"),
                           status="crash")
        finally:
            child.close()
        self.pid = self._proc.pid
        self._hangup = select.poll()
        self._hangup.register(parent.fileno(), select.POLLRDHUP)
        _, self._channel = await loop.create_connection(lambda: _Channel(self), sock=parent)
        self._sock = parent
        self._tasks.append(asyncio.create_task(self._pump_raw_output()))
        try:
            message = await asyncio.wait_for(asyncio.shield(self._waiter), INIT_TIMEOUT_S)
        except TimeoutError:
            await self.kill()
            return Outcome(
                error=_fault("Sandbox.Timedout", f"Init timed out after {INIT_TIMEOUT_S:.2f} seconds"),
                status="timeout", duration_ms=(time.perf_counter() - started) * 1000, output=self._take_output(),
            )
        # init is timed from spawn to ready (interpreter start + imports): what a cold start costs a caller
        self.init_ms = (time.perf_counter() - started) * 1000
        output = self._take_output()
        if message["t"] == "ready":
            self.state = ProcessState.IDLE
            self.idle_since = time.monotonic()
            return Outcome(duration_ms=self.init_ms, output=output)
        await self.kill()
        error = message.get("error") or _fault("Runtime.Unknown", "Init failed")
        status = "crash" if message["t"] == "exit" else "error"
        return Outcome(error=error, status=status, duration_ms=self.init_ms, output=output)

    async def invoke(self, request: InvokeRequest) -> Outcome:
        """Run one invocation; the caller must hold this process (state IDLE -> BUSY -> IDLE/DEAD)."""
        assert self.state is ProcessState.IDLE and self._channel and self._channel.transport
        loop = asyncio.get_running_loop()
        self.state = ProcessState.BUSY
        self.invocations += 1
        self._request_id = request.request_id
        self._waiter = loop.create_future()
        started = time.perf_counter()
        deadline_ms = int(time.time() * 1000 + request.timeout_s * 1000)
        payload = request.payload
        fields = payload if type(payload) is SqsFields else None
        frame = {
            "t": "invoke",
            "id": request.request_id,
            "payload": b"" if fields is not None else payload,
            "deadline_ms": deadline_ms,
            "arn": request.invoked_arn,
            "client_context": request.client_context,
            "trace_id": request.trace_id,
        }
        if fields is not None:
            frame["sqs"] = (fields.source_arn, fields.region, fields.rows)
        self._send(_PACKER.pack(frame))
        # a plain timer is cheaper than asyncio.timeout()'s cancellation machinery on the hot path
        timer = loop.call_later(request.timeout_s, _expire, self._waiter)
        try:
            message = await self._waiter
        except TimeoutError:
            duration_ms = (time.perf_counter() - started) * 1000
            await self.kill()
            message = {
                "t": "error",
                "status": "timeout",
                "error": _fault(
                    "Sandbox.Timedout",
                    f"RequestId: {request.request_id} Error: Task timed out after {request.timeout_s:.2f} seconds",
                ),
            }
        else:
            duration_ms = (time.perf_counter() - started) * 1000
        finally:
            timer.cancel()
        self._request_id = None
        outcome = Outcome(duration_ms=duration_ms, output=self._take_output(),
                          max_memory_mb=int(message.get("rss_kb", 0)) // 1024)
        if message["t"] == "result":
            outcome.payload = message["payload"]
        else:
            error = dict(message["error"])
            crashed = message.get("status") == "crash" or message.get("fatal")
            if crashed and error.get("errorType", "").startswith("Runtime."):
                error["errorMessage"] = f"RequestId: {request.request_id} Error: {error['errorMessage']}"
            outcome.error = error
            outcome.status = message.get("status") or ("crash" if message.get("fatal") else "error")
        if self.state is ProcessState.BUSY:
            self.state = ProcessState.IDLE
            self.idle_since = time.monotonic()
        return outcome

    def _send(self, frame: bytes) -> None:
        """Write `frame` to the process. uvloop's transport.write makes its send() system call holding
        the GIL, and that call (which wakes the handler) was an eighth of the event loop's GIL-held
        time on the queue benchmark, time the store's writer thread could not run. socket.send makes
        the same call without the GIL. What it cannot write at once (a full socket buffer, a large
        event) goes to the transport as before, which also keeps frames in order: the socket is used
        only while the transport has nothing buffered. Errors (the process died) are left to the
        transport too, which reports them as before."""
        assert self._channel is not None and self._channel.transport is not None
        transport = self._channel.transport
        sent = 0
        if self._sock is not None and not transport.get_write_buffer_size():
            with contextlib.suppress(OSError):
                sent = self._sock.send(frame)
        if sent < len(frame):
            transport.write(memoryview(frame)[sent:] if sent else frame)

    async def stop(self) -> None:
        """Ask the process to exit; kill it if it has not within the grace period."""
        if self.state is ProcessState.DEAD or self._proc is None:
            return
        if self._channel and self._channel.transport and not self._channel.transport.is_closing():
            self._channel.transport.write(msgpack.packb({"t": "stop"}))
        try:
            await asyncio.wait_for(self._proc.wait(), STOP_GRACE_S)
        except TimeoutError:
            await self.kill()
        self._mark_dead("stopped")

    async def kill(self) -> None:
        """SIGKILL the process group (the handler may have started children) and reap it."""
        self._killed_by_us = True
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            await self._proc.wait()
        self._mark_dead("killed")

    def _mark_dead(self, reason: str) -> None:
        self.state = ProcessState.DEAD
        self._exit_reason = self._exit_reason or reason
        if self._channel and self._channel.transport:
            self._channel.transport.close()

    # --- called by _Channel -------------------------------------------------------------------

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind == "log":
            text = str(message.get("d", ""))
            self._output.append(text)
            if self._request_id is None:
                # init output is logged now; an invocation's is written with its END and REPORT, in one piece
                self._sink(None, text)
        elif kind in ("ready", "init_error", "result", "error"):
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(message)
        else:
            raise ValueError(f"unexpected message {kind!r}")

    def _on_garbage(self, exc: Exception) -> None:
        self._exit_reason = "protocol"
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(
                {"t": "exit", "status": "crash",
                 "error": _fault("Runtime.InvalidResponse", f"The runtime sent an invalid message: {exc}")}
            )
        asyncio.get_running_loop().create_task(self.kill())

    def _on_eof(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            asyncio.get_running_loop().create_task(self._report_exit(self._waiter))
        elif self.state is not ProcessState.DEAD:
            self.state = ProcessState.DEAD

    async def _report_exit(self, waiter: asyncio.Future[dict[str, Any]]) -> None:
        """The socket closed with a reply pending: the process exited. Say how, Lambda-style."""
        assert self._proc is not None
        try:
            code = await asyncio.wait_for(self._proc.wait(), STOP_GRACE_S)
        except TimeoutError:
            await self.kill()
            code = self._proc.returncode
        if self._killed_by_us:
            return  # the timeout or kill path already answers
        self.state = ProcessState.DEAD
        if code is not None and code < 0:
            reason = f"Runtime exited with error: signal: {_signal_name(-code)}"
        elif code:
            reason = f"Runtime exited with error: exit status {code}"
        else:
            reason = "Runtime exited without providing a reason"
        if not waiter.done():
            waiter.set_result({"t": "exit", "status": "crash", "error": _fault("Runtime.ExitError", reason)})

    async def _pump_raw_output(self) -> None:
        """Output written straight to fd 1/2 (C code, child processes) bypasses the channel: log it too."""
        assert self._proc is not None and self._proc.stdout is not None
        stream = self._proc.stdout
        while True:
            try:
                line = await stream.readline()
            except (ValueError, asyncio.LimitOverrunError):
                line = await stream.read(65536)
            if not line:
                return
            text = line.decode(errors="replace")
            self._output.append(text)
            if self._request_id is None:
                self._sink(None, text)

    def _take_output(self) -> list[str]:
        output, self._output = self._output, []
        return output


def _expire(waiter: asyncio.Future[dict[str, Any]]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _fault(error_type: str, message: str) -> dict[str, Any]:
    return {"errorType": error_type, "errorMessage": message}


def _signal_name(number: int) -> str:
    try:
        return {signal.SIGKILL: "killed", signal.SIGSEGV: "segmentation fault", signal.SIGABRT: "aborted"}.get(
            signal.Signals(number), signal.Signals(number).name
        )
    except ValueError:
        return str(number)


def bootstrap_argv() -> list[str]:
    """The command that starts a Python handler process."""
    return [sys.executable, "-u", "-m", "eventd.runtimes.bootstrap"]


def eventd_import_root() -> str:
    """The folder that holds the `eventd` package, so a handler process can import its bootstrap
    even when the daemon runs from a checkout rather than an install."""
    import eventd

    return os.path.dirname(os.path.dirname(os.path.abspath(eventd.__file__)))
