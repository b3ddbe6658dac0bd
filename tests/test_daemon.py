"""The daemon as systemd runs it: READY/STOPPING notifications, watchdog, signals, graceful drain."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.harness import Daemon, Gate, http, wait_until


class NotifySocket:
    """A fake systemd notify socket: collects what the daemon sends to $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.setblocking(False)
        self.messages: list[str] = []

    def received(self) -> list[str]:
        while True:
            try:
                self.messages.extend(self._sock.recv(4096).decode().split("\n"))
            except BlockingIOError:
                return self.messages

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes: it runs no code
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped between the open and the read
        return False


def test_ready_watchdog_and_stopping_notifications(daemon_factory, notify_socket: NotifySocket) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory({"fn": {"handler": "gated.handler", "warm": 2}}, {"gated.py": Gate.HANDLER})
    daemon.env = {"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "200000"}
    daemon.start(wait_ready=False)
    wait_until(lambda: "READY=1" in notify_socket.received(), timeout=20, what="READY=1")
    # READY comes only once the warm processes are up
    assert daemon.processes("fn") == {"starting": 0, "idle": 2, "busy": 0}
    wait_until(lambda: notify_socket.received().count("WATCHDOG=1") >= 3, timeout=10, what="watchdog pings")
    assert daemon.stop() == 0
    assert "STOPPING=1" in notify_socket.received()
    assert notify_socket.received().index("STOPPING=1") > notify_socket.received().index("READY=1")


def test_sigterm_drains_in_flight_invocations(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory({"fn": {"handler": "gated.handler", "warm": 1}}, {"gated.py": Gate.HANDLER}).start()
    gate = Gate(tmp_path / "gate.sock")
    pid = daemon.invoke("fn", {}).json()["pid"]
    with ThreadPoolExecutor(2) as pool:
        in_flight = [pool.submit(daemon.invoke, "fn", {"gate": gate.path}) for _ in range(2)]
        gate.wait_arrivals(2)
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGTERM)

        def refusing() -> bool:
            try:
                http("GET", daemon.url + "/healthz", timeout=1)
            except OSError:
                return True
            return False

        wait_until(refusing, what="the listener to close")
        assert daemon.process.poll() is None  # still draining: the two invocations are running
        gate.close()
        replies = [f.result(timeout=20) for f in in_flight]
    assert [r.status for r in replies] == [200, 200]
    assert daemon.process.wait(20) == 0
    assert not alive(pid)
    assert "Stopping: waiting up to 10 s for 2 in-flight invocations." in daemon.output()


def test_drain_timeout_bounds_the_wait(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory({"fn": {"handler": "gated.handler", "timeout": "60s"}},
                                    {"gated.py": Gate.HANDLER}, drain_timeout="300ms").start()
    gate = Gate(tmp_path / "gate.sock")
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(daemon.invoke, "fn", {"gate": gate.path})
        gate.wait_arrivals(1)
        assert daemon.processes("fn")["busy"] == 1
        assert daemon.stop(timeout=15) == 0
        with pytest.raises(OSError):
            stuck.result(timeout=20)
    gate.close()


def test_second_signal_skips_the_drain(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory({"fn": {"handler": "gated.handler", "timeout": "60s"}},
                                    {"gated.py": Gate.HANDLER}, drain_timeout="60s").start()
    gate = Gate(tmp_path / "gate.sock")
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(daemon.invoke, "fn", {"gate": gate.path})
        gate.wait_arrivals(1)
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGTERM)
        wait_until(lambda: "Stopping:" in daemon.output(), what="the drain to start")
        daemon.process.send_signal(signal.SIGINT)
        assert daemon.process.wait(15) == 0
        assert "Second stop signal" in daemon.output()
        with pytest.raises(OSError):
            stuck.result(timeout=20)
    gate.close()


def test_sighup_does_not_stop_the_daemon(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory({"fn": {"handler": "gated.handler"}}, {"gated.py": Gate.HANDLER}).start()
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "SIGHUP" in daemon.output(), what="the SIGHUP log line")
    assert daemon.invoke("fn", {}).status == 200
    assert daemon.stop() == 0


def test_handler_processes_do_not_outlive_the_daemon(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory({"fn": {"handler": "gated.handler", "warm": 3}}, {"gated.py": Gate.HANDLER}).start()
    pid = daemon.invoke("fn", {}).json()["pid"]
    assert daemon.stop() == 0
    wait_until(lambda: not alive(pid), timeout=5, what="the handler process to exit")
