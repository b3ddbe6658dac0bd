"""How handler processes are started: forked from the fork server (fast), or spawned directly (the
fallback when the fork server is unavailable). Both give the same handle: pid, returncode, wait(),
and a reader of the process's raw output."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import sys
from typing import Any, Protocol

import msgpack

from eventd.runtimes.forkserver import CONTROL_FD_ENV, MAX_PACKET
from eventd.runtimes.protocol import IPC_FD_ENV

log = logging.getLogger(__name__)


class Launched(Protocol):
    pid: int
    stdout: asyncio.StreamReader | None

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


class Launcher(Protocol):
    async def launch(self, argv: list[str], env: dict[str, str], cwd: str, ipc_fd: int) -> Launched: ...


class DirectLauncher:
    """A new interpreter per handler process."""

    async def launch(self, argv: list[str], env: dict[str, str], cwd: str, ipc_fd: int) -> Launched:
        return await asyncio.create_subprocess_exec(  # type: ignore[return-value]
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=cwd,
            env={**env, IPC_FD_ENV: str(ipc_fd)},
            pass_fds=(ipc_fd,),
            # its own session: a Ctrl-C at the daemon's terminal must not reach handlers mid-invocation
            start_new_session=True,
        )


class ForkedProcess:
    """A handler process forked by the fork server: not our child, so the server reports its exit."""

    def __init__(self, pid: int, stdout: asyncio.StreamReader) -> None:
        self.pid = pid
        self.stdout: asyncio.StreamReader | None = stdout
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @property
    def returncode(self) -> int | None:
        return self._exit.result() if self._exit.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    def exited(self, code: int) -> None:
        if not self._exit.done():
            self._exit.set_result(code)


class ForkServerLauncher:
    """Talks to one fork server process; falls back to DirectLauncher if it is or becomes unusable."""

    def __init__(self, python_path: str) -> None:
        self._python_path = python_path
        self._fallback = DirectLauncher()
        self._server: asyncio.subprocess.Process | None = None
        self._control: socket.socket | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._children: dict[int, ForkedProcess] = {}
        #: exits reported before launch() had registered the child (a process that died at once)
        self._early_exits: dict[int, int] = {}
        self._ids = itertools.count(1)
        self._watchers: set[asyncio.Task[None]] = set()
        self.available = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._server = await asyncio.create_subprocess_exec(
                sys.executable, "-u", "-m", "eventd.runtimes.forkserver",
                stdin=asyncio.subprocess.DEVNULL, pass_fds=(theirs.fileno(),), start_new_session=True, cwd="/",
                env={**_base_env(), "PYTHONPATH": self._python_path, CONTROL_FD_ENV: str(theirs.fileno())},
            )
        except OSError as exc:
            log.warning("Cannot start the fork server (%s); handler processes start directly.", exc)
            ours.close()
            return
        finally:
            theirs.close()
        ours.setblocking(False)
        self._control = ours
        loop.add_reader(ours.fileno(), self._on_readable)
        self.available = True

    async def stop(self) -> None:
        if self._control is not None:
            asyncio.get_running_loop().remove_reader(self._control.fileno())
            self._control.close()
            self._control = None
        self.available = False
        if self._server is not None and self._server.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._server.kill()
            await self._server.wait()

    async def launch(self, argv: list[str], env: dict[str, str], cwd: str, ipc_fd: int) -> Launched:
        if not self.available or self._control is None:
            return await self._fallback.launch(argv, env, cwd, ipc_fd)
        loop = asyncio.get_running_loop()
        read_end, write_end = os.pipe()
        request_id = next(self._ids)
        reply: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[request_id] = reply
        try:
            packet = msgpack.packb({"t": "spawn", "id": request_id, "env": env, "cwd": cwd})
            socket.send_fds(self._control, [packet], [ipc_fd, write_end])
        except OSError as exc:
            self._pending.pop(request_id, None)
            os.close(read_end)
            self._broken(f"cannot reach it: {exc}")
            return await self._fallback.launch(argv, env, cwd, ipc_fd)
        finally:
            os.close(write_end)
        try:
            answer = await asyncio.wait_for(reply, 10.0)
        except TimeoutError:
            os.close(read_end)
            self._broken("it did not answer within 10 s")
            return await self._fallback.launch(argv, env, cwd, ipc_fd)
        if answer["t"] != "spawned":
            os.close(read_end)
            raise OSError(answer.get("error", "the fork server could not fork"))
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_end, "rb", 0))
        process = ForkedProcess(answer["pid"], reader)
        early = self._early_exits.pop(process.pid, None)
        if early is not None:
            process.exited(early)
        else:
            self._children[process.pid] = process
        return process

    def _on_readable(self) -> None:
        assert self._control is not None
        while True:
            try:
                data = self._control.recv(MAX_PACKET)
            except BlockingIOError:
                return
            except OSError as exc:
                self._broken(str(exc))
                return
            if not data:
                self._broken("it exited")
                return
            message = msgpack.unpackb(data, raw=False)
            if message["t"] == "exit":
                child = self._children.pop(message["pid"], None)
                if child is not None:
                    child.exited(int(message["code"]))
                else:
                    self._early_exits[message["pid"]] = int(message["code"])
            else:
                waiter = self._pending.pop(message["id"], None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)

    def _broken(self, reason: str) -> None:
        """Stop using the fork server; children it started are watched directly until they exit."""
        if not self.available:
            return
        self.available = False
        log.warning("The fork server is unusable (%s); new handler processes start directly.", reason)
        loop = asyncio.get_running_loop()
        if self._control is not None:
            loop.remove_reader(self._control.fileno())
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_result({"t": "failed", "error": reason})
        self._pending.clear()
        for child in list(self._children.values()):
            task = loop.create_task(_watch_orphan(child))
            self._watchers.add(task)
            task.add_done_callback(self._watchers.discard)
        self._children.clear()


async def _watch_orphan(child: ForkedProcess) -> None:
    """Without the fork server nobody reports this child's exit: poll until it is gone."""
    while True:
        try:
            os.kill(child.pid, 0)
        except ProcessLookupError:
            child.exited(-9)  # the real status is lost with the server
            return
        await asyncio.sleep(0.1)


def _base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    return {k: os.environ[k] for k in keep if k in os.environ}
