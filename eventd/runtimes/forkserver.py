"""The fork server: one process that has already started Python and imported the bootstrap, and
forks a handler process on request. A cold start then costs a fork plus the user's own imports,
not an interpreter start (tens of milliseconds).

Protocol, over an AF_UNIX SOCK_SEQPACKET pair (one msgpack message per packet, file descriptors
passed with SCM_RIGHTS):

  daemon -> server   {"t": "spawn", "id", "env", "cwd"} + [ipc socket, output pipe]
  server -> daemon   {"t": "spawned", "id", "pid"} | {"t": "failed", "id", "error"}
                     {"t": "exit", "pid", "code"}     code as asyncio reports it (-N for signal N)

The server is single-threaded, so forking it is safe. Only the standard library and msgpack here.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
from typing import Any

import msgpack

from eventd.runtimes.protocol import IPC_FD_ENV

#: Environment variable naming the control socket's descriptor in the fork server.
CONTROL_FD_ENV = "EVENTD_FORKSERVER_FD"
#: Largest control packet: a spawn request carries a function's whole environment.
MAX_PACKET = 1 << 20


def main() -> None:
    control = socket.socket(fileno=int(os.environ.pop(CONTROL_FD_ENV)))
    control.setblocking(True)
    # import what every handler process needs once, here, so children start with it
    from eventd.runtimes import bootstrap

    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd does the work
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when this process ends
    devnull = os.open(os.devnull, os.O_RDONLY)
    while True:
        readable, _, _ = select.select([control, wake_read], [], [])
        if wake_read in readable:
            os.read(wake_read, 4096)
            _reap(control)
        if control in readable:
            try:
                data, fds, _, _ = socket.recv_fds(control, MAX_PACKET, 4)
            except ConnectionError:
                return
            if not data:
                return  # the daemon is gone; running handlers notice on their own sockets
            request = msgpack.unpackb(data, raw=False)
            _spawn(control, request, fds, devnull, (control.fileno(), wake_read, wake_write), bootstrap.main)


def _spawn(control: socket.socket, request: dict[str, Any], fds: list[int], devnull: int,
           private: tuple[int, ...], run: Any) -> None:
    ipc_fd, out_fd = fds
    try:
        pid = os.fork()
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        control.send(msgpack.packb({"t": "failed", "id": request["id"], "error": str(exc)}))
        return
    if pid == 0:  # the handler process
        code = 70
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            for fd in private:
                os.close(fd)
            os.setsid()  # its own session and process group, as a directly started one has
            os.dup2(devnull, 0)
            os.dup2(out_fd, 1)
            os.dup2(out_fd, 2)
            os.close(out_fd)
            os.close(devnull)
            os.chdir(request["cwd"])
            sys.path[0] = request["cwd"]  # as `python -m` in that folder would have it
            os.environ.clear()
            os.environ.update(request["env"])
            os.environ[IPC_FD_ENV] = str(ipc_fd)
            sys.argv = ["eventd-handler"]
            run()
            code = 0
        except SystemExit as exc:  # as the interpreter would end: None is 0, a message is printed and 1
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                sys.stderr.write(f"{exc.code}\n")
                code = 1
        except BaseException:  # noqa: BLE001 - nothing may escape into the fork server's loop
            code = 70
        finally:
            os._exit(code)
    os.close(ipc_fd)
    os.close(out_fd)
    control.send(msgpack.packb({"t": "spawned", "id": request["id"], "pid": pid}))


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        control.send(msgpack.packb({"t": "exit", "pid": pid, "code": os.waitstatus_to_exitcode(status)}))


if __name__ == "__main__":
    main()
