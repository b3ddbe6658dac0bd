"""The `eventd` command, run as a real subprocess against real daemons, files and sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eventd import __version__
from tests.harness import Daemon, free_port, http, wait_until

CODE = {
    "fn.py": """\
        def echo(event, context):
            print("echo got", event)
            return {"got": event}

        def boom(event, context):
            raise ValueError("bad thing")
    """
}
FUNCTIONS = {
    "echo": {"handler": "fn.echo", "concurrency": 2, "warm": 1},
    "boom": {"handler": "fn.boom"},
}

#: Variables that steer the CLI; the tests set them explicitly or not at all.
_STEERING = ("EVENTD_URL", "EVENTD_CONFIG", "STATE_DIRECTORY", "XDG_STATE_HOME")


def cli_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _STEERING}
    return {**env, **extra}


def eventd(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
           cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventd", *args], capture_output=True, text=True, input=stdin,
        env=cli_env() if env is None else env, cwd=cwd, timeout=60, check=False,
    )


def one_line(stream: str) -> str:
    """The single line of `stream`; fails on a traceback or several lines."""
    assert "Traceback" not in stream, stream
    lines = stream.splitlines()
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{stream}"
    return lines[0]


def closed_url() -> str:
    """A loopback URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def daemon(daemon_factory: Callable[..., Daemon]) -> Daemon:
    return daemon_factory(FUNCTIONS, CODE).start()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# --- check -------------------------------------------------------------------------------------------


def test_check_good_config(tmp_path: Path) -> None:
    (tmp_path / "functions").mkdir()
    path = write(
        tmp_path / "eventd.yaml", "functions:\n  hello:\n    handler: hello.handler\n    code: functions\n"
    )
    result = eventd("check", str(path))
    assert result.returncode == 0, result.stderr
    assert one_line(result.stdout) == f"{path}: ok (1 function)"
    assert result.stderr == ""


def test_check_bad_config_prints_every_problem(tmp_path: Path) -> None:
    path = write(
        tmp_path / "eventd.yaml",
        """\
        listn: 127.0.0.1:9271
        functions:
          hello:
            handler: hello
            timout: 3s
            code: nowhere
        """,
    )
    result = eventd("check", str(path))
    assert result.returncode == 78
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"eventd: {path} is not a valid config (4 problems):",
        f"{path}:1: listn: unknown key; did you mean 'listen'?",
        f"{path}:4: functions.hello.handler: expected `module.function` "
        "(like `hello.handler` or `pkg.mod.handler`), found 'hello'",
        f"{path}:5: functions.hello.timout: unknown key; did you mean 'timeout'?",
        f"{path}:6: functions.hello.code: expected an existing folder, "
        f"found no folder at {tmp_path.resolve()}/nowhere",
    ]


def test_check_one_problem_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / "eventd.yaml", "log_level: loud\n")
    result = eventd("check", str(path))
    assert result.returncode == 78
    assert one_line(result.stderr) == (
        f"eventd: {path}:1: log_level: expected one of debug, info, warning, error; found 'loud'"
    )


def test_check_missing_file(tmp_path: Path) -> None:
    result = eventd("check", str(tmp_path / "absent.yaml"))
    assert result.returncode == 78
    assert result.stdout == ""
    assert one_line(result.stderr) == (
        f"eventd: {tmp_path / 'absent.yaml'}: cannot read the file: No such file or directory"
    )


# --- run ---------------------------------------------------------------------------------------------


def test_run_bad_config_exits_78_without_starting(tmp_path: Path) -> None:
    port = free_port()
    path = write(
        tmp_path / "eventd.yaml",
        f"""\
        listen: 127.0.0.1:{port}
        state_dir: state
        functions:
          hello:
            handler: hello.handler
            memory_mb: 1
            warm: -1
        """,
    )
    result = eventd("run", "-c", str(path))
    assert result.returncode == 78
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"eventd: {path} is not a valid config (2 problems):",
        f"{path}:6: functions.hello.memory_mb: expected a number >= 128, found 1",
        f"{path}:7: functions.hello.warm: expected a number >= 0, found -1",
    ]
    # nothing was started: the state folder (the daemon's first step) was not created
    assert not (tmp_path / "state").exists()


def test_run_missing_config_exits_78(tmp_path: Path) -> None:
    result = eventd("run", "-c", str(tmp_path / "absent.yaml"))
    assert result.returncode == 78
    assert one_line(result.stderr) == (
        f"eventd: {tmp_path / 'absent.yaml'}: cannot read the file: No such file or directory"
    )


def test_run_bad_config_from_eventd_config_variable(tmp_path: Path) -> None:
    path = write(tmp_path / "eventd.yaml", "listen: nowhere\n")
    result = eventd("run", env=cli_env(EVENTD_CONFIG=str(path)))
    assert result.returncode == 78
    assert one_line(result.stderr) == (
        f"eventd: {path}:1: listen: expected host:port, like 127.0.0.1:9271, found 'nowhere'"
    )


def test_run_on_a_port_in_use_exits_3(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write(tmp_path / "eventd.yaml", f"listen: 127.0.0.1:{port}\nstate_dir: state\n")
        result = eventd("run", "-c", str(path))
    assert result.returncode == 3
    line = one_line(result.stderr)
    assert f"Cannot listen on 127.0.0.1:{port}" in line
    assert "in use" in line


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # as eventd binds: connections left in TIME_WAIT by an earlier daemon do not make the port busy
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    """`eventd run` with no config, its state under a temp XDG_STATE_HOME; always stopped afterwards."""
    if not _port_free(9271):
        pytest.skip("127.0.0.1:9271 is in use, and the embedded example always listens there")
    state_home = tmp_path / "xdg-state"
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "eventd", "run"], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=cli_env(XDG_STATE_HOME=str(state_home)),
        )
    try:
        yield process, state_home, log_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_run_without_config_serves_the_embedded_example(
    embedded: tuple[subprocess.Popen[bytes], Path, Path],
) -> None:
    process, state_home, log_path = embedded

    def up_or_exited() -> bool:
        if process.poll() is not None:
            return True
        try:
            return http("GET", "http://127.0.0.1:9271/readyz", timeout=2).status == 200
        except OSError:
            return False

    wait_until(up_or_exited, 20, what="the embedded example on 127.0.0.1:9271")
    if process.poll() is not None:
        output = log_path.read_text(errors="replace")
        if process.returncode == 3 and "Cannot listen" in output:
            pytest.skip(f"127.0.0.1:9271 was taken while eventd started: {output.strip()}")
        pytest.fail(f"eventd exited with {process.returncode}:\n{output}")
    # no --url, -c or EVENTD_URL: the CLI's default address is the embedded example's
    result = eventd("invoke", "hello", "--payload", '{"name": "Ann"}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["message"] == "Hello, Ann!"
    # it was this daemon that answered: its function log is under the XDG state folder
    wait_until(lambda: "Saying hello to Ann." in _read(state_home / "eventd" / "logs" / "hello.log"),
               what="the hello log under XDG_STATE_HOME")
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


# --- invoke ------------------------------------------------------------------------------------------


def test_invoke_prints_the_result(daemon: Daemon) -> None:
    result = eventd("invoke", "echo", "--payload", '{"name": "Ann", "n": [1, 2]}', "--url", daemon.url)
    assert result.returncode == 0, result.stderr
    assert json.loads(one_line(result.stdout)) == {"got": {"name": "Ann", "n": [1, 2]}}
    assert result.stderr == ""

    # no payload is an empty object, as with the AWS CLI
    result = eventd("invoke", "echo", "--url", daemon.url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"got": {}}

    # --log adds the invocation's log tail on stderr, keeping stdout the bare result
    result = eventd("invoke", "echo", "--payload", '{"x": 1}', "--log", "--url", daemon.url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"got": {"x": 1}}
    assert "echo got {'x': 1}" in result.stderr


def test_invoke_function_error_exits_1(daemon: Daemon) -> None:
    result = eventd("invoke", "boom", "--url", daemon.url)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert one_line(result.stderr) == "eventd: boom failed: ValueError: bad thing"
    error = json.loads(result.stdout)
    assert (error["errorType"], error["errorMessage"]) == ("ValueError", "bad thing")


def test_invoke_payload_file(daemon: Daemon, tmp_path: Path) -> None:
    payload = write(tmp_path / "event.json", '{"from": "file"}')
    result = eventd("invoke", "echo", "--payload-file", str(payload), "--url", daemon.url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"got": {"from": "file"}}

    result = eventd("invoke", "echo", "--payload-file", "-", "--url", daemon.url, stdin='{"from": "stdin"}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"got": {"from": "stdin"}}


@pytest.mark.parametrize(
    ("args", "stdin"),
    [(["--payload", "{name: Ann}"], None), (["--payload-file", "-"], "[1, 2")],
    ids=["arg", "stdin"],
)
def test_invoke_invalid_payload_exits_2(args: list[str], stdin: str | None) -> None:
    # nothing listens at the URL: exit 2 (not 1) shows the payload was refused before any request
    result = eventd("invoke", "echo", *args, "--url", closed_url(), stdin=stdin)
    assert result.returncode == 2
    assert result.stdout == ""
    # the rest of the line is the json module's own words, which vary between Python versions
    assert one_line(result.stderr).startswith("eventd: the payload is not JSON: ")


def test_invoke_unreadable_payload_file_exits_2(tmp_path: Path) -> None:
    result = eventd("invoke", "echo", "--payload-file", str(tmp_path / "absent.json"), "--url", closed_url())
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        f"eventd: cannot read {tmp_path / 'absent.json'}: No such file or directory"
    )


def test_invoke_unknown_function_exits_1(daemon: Daemon) -> None:
    result = eventd("invoke", "nope", "--url", daemon.url)
    assert result.returncode == 1
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert line.startswith("eventd: ResourceNotFoundException: Function not found: ")
    assert line.endswith(":function:nope")


# --- status ------------------------------------------------------------------------------------------


def test_status_table_and_json(daemon: Daemon) -> None:
    result = eventd("status", "--url", daemon.url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"eventd {__version__}  up ")
    assert lines[0].endswith("concurrency 0/64")
    assert lines[1].split() == ["FUNCTION", "HANDLER", "IDLE", "BUSY", "STARTING", "IN", "USE", "CAP", "WARM"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"echo", "boom"}
    # columns: name, handler, idle, busy, starting, in use, cap (+ "(shared)"), warm
    assert rows["echo"][1] == "fn.echo" and rows["echo"][6:] == ["2", "1"]
    assert rows["boom"][1] == "fn.boom" and rows["boom"][6:] == ["62", "(shared)", "0"]

    result = eventd("status", "--json", "--url", daemon.url)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["version"] == __version__
    functions = {fn["name"]: fn for fn in status["functions"]}
    assert set(functions) == {"echo", "boom"}
    echo = functions["echo"]
    assert (echo["reserved"], echo["concurrency_limit"], echo["warm"]) == (2, 2, 1)
    assert functions["boom"]["reserved"] is None


# --- finding the daemon ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["url", "config", "env"])
def test_daemon_discovery(daemon: Daemon, tmp_path: Path, how: str) -> None:
    # wrong values for the lower-precedence sources, so each source only passes if it wins over them:
    # --url over -c and EVENTD_URL, -c over EVENTD_URL
    env = cli_env(EVENTD_URL=daemon.url if how == "env" else closed_url())
    elsewhere = write(tmp_path / "elsewhere.yaml", f"listen: 127.0.0.1:{free_port()}\n")
    where = {
        "url": ["--url", daemon.url, "-c", str(elsewhere)],
        "config": ["-c", str(daemon.config_path)],
        "env": [],
    }[how]
    result = eventd("invoke", "echo", "--payload", json.dumps({"how": how}), *where, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"got": {"how": how}}
    result = eventd("status", "--json", *where, env=env)
    assert result.returncode == 0, result.stderr
    assert {fn["name"] for fn in json.loads(result.stdout)["functions"]} == {"echo", "boom"}


@pytest.mark.parametrize("command", [["invoke", "echo"], ["status"]], ids=["invoke", "status"])
@pytest.mark.parametrize("how", ["url", "config", "env"])
def test_no_daemon_is_one_line_exit_1(tmp_path: Path, command: list[str], how: str) -> None:
    url = closed_url()
    config = write(tmp_path / "eventd.yaml", f"listen: {url.removeprefix('http://')}\n")
    where = {"url": ["--url", url], "config": ["-c", str(config)], "env": []}[how]
    result = eventd(*command, *where, env=cli_env(EVENTD_URL=url))
    assert result.returncode == 1
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert line.startswith(f"eventd: cannot reach eventd at {url}: ")
    assert line.endswith("(is it running? start it with `eventd run`)")


@pytest.mark.parametrize(
    ("where", "env", "message"),
    [
        (["--url", "localhost:9271"], {},
         "eventd: --url 'localhost:9271' is not a URL like http://127.0.0.1:9271"),
        (["--url", "http://[::1"], {}, "eventd: --url 'http://[::1' is not a URL like http://127.0.0.1:9271"),
        ([], {"EVENTD_URL": "http://127.0.0.1:99999"},
         "eventd: EVENTD_URL 'http://127.0.0.1:99999' is not a URL like http://127.0.0.1:9271"),
    ],
    ids=["no-scheme", "bad-ipv6", "bad-port"],
)
def test_bad_url_is_a_usage_error(where: list[str], env: dict[str, str], message: str) -> None:
    result = eventd("status", *where, env=cli_env(**env))
    assert result.returncode == 2
    assert one_line(result.stderr) == message


def test_config_with_bad_file_for_discovery_exits_78(tmp_path: Path) -> None:
    result = eventd("status", "-c", str(tmp_path / "absent.yaml"))
    assert result.returncode == 78
    assert one_line(result.stderr) == (
        f"eventd: {tmp_path / 'absent.yaml'}: cannot read the file: No such file or directory"
    )


def test_status_from_something_that_is_not_eventd(tmp_path: Path) -> None:
    # a plain HTTP file server stands in for "EVENTD_URL points at the wrong service"
    (tmp_path / "admin").mkdir()
    (tmp_path / "admin" / "status").write_text("<html>not eventd</html>")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def serving() -> bool:
            try:
                return http("GET", url + "/admin/status", timeout=2).status == 200
            except OSError:
                return False

        wait_until(serving, what="the stand-in HTTP server")
        result = eventd("status", "--url", url)
    finally:
        server.kill()
        server.wait()
    assert result.returncode == 1
    assert one_line(result.stderr) == f"eventd: {url} did not answer like eventd (its status is not JSON)"
