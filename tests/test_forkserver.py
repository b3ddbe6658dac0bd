"""Handler processes forked by the fork server, and the fall back to direct starts when it is gone."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.harness import Daemon, wait_until

HANDLER = '''
import os

def handler(event, context):
    return {"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd()}
'''


def forkserver_pid(daemon: Daemon) -> int | None:
    assert daemon.process is not None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == daemon.process.pid and b"eventd.runtimes.forkserver" in cmdline:
            return int(entry.name)
    return None


def test_cold_starts_fork_from_the_server_and_survive_its_death(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory({"a": {"handler": "h.handler"}, "b": {"handler": "h.handler"}},
                                    {"h.py": HANDLER}).start()
    server = forkserver_pid(daemon)
    assert server is not None
    first = daemon.invoke("a", {}).json()
    assert first["ppid"] == server  # forked, not a new interpreter
    assert first["cwd"] == str(daemon.root / "functions")
    os.kill(server, signal.SIGKILL)
    wait_until(lambda: "fork server is unusable" in daemon.output() or daemon.invoke("b", {}).status == 200,
               what="a cold start after the fork server died")
    second = daemon.invoke("b", {}).json()
    assert second["ppid"] in (daemon.process.pid, 1) if daemon.process else False
    # the process it forked earlier keeps serving
    assert daemon.invoke("a", {}).json()["pid"] == first["pid"]
    assert daemon.stop() == 0


def test_the_fork_server_can_be_turned_off(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory({"a": {"handler": "h.handler"}}, {"h.py": HANDLER})
    daemon.env = {"EVENTD_FORKSERVER": "0"}
    daemon.start()
    assert forkserver_pid(daemon) is None
    assert daemon.process is not None
    assert daemon.invoke("a", {}).json()["ppid"] == daemon.process.pid
