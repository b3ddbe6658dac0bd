"""Handler behaviour through a real daemon: results, every failure kind, context, environment, logs.

One daemon serves all functions of this module (starting it is the slow part); each failure test
also checks that the same function answers correctly right after, so no failure leaves damage.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Daemon, make_daemon, metric_value, wait_until

CODE = {
    "fns.py": '''
        import asyncio, json, os, signal, sys

        def echo(event, context):
            return event

        def none(event, context):
            return None

        def raises(event, context):
            if event.get("ok"):
                return "fine"
            raise ValueError("bad input: " + str(event.get("n")))

        async def async_echo(event, context):
            await asyncio.sleep(0)
            return {"async": event}

        def slow(event, context):
            if event.get("ok"):
                return "fast"
            import time
            time.sleep(30)

        def hog(event, context):
            if event.get("ok"):
                return "small"
            blob = bytearray(400 * 1024 * 1024)
            return len(blob)

        def exits(event, context):
            if event.get("ok"):
                return "alive"
            if event.get("how") == "os_exit":
                os._exit(3)
            if event.get("how") == "signal":
                os.kill(os.getpid(), signal.SIGSEGV)
            sys.exit()

        def unserialisable(event, context):
            if event.get("ok"):
                return [1, 2]
            return {"when": object()}

        def huge(event, context):
            return "x" * (7 * 1024 * 1024)

        def garbage(event, context):
            if event.get("ok"):
                return "clean"
            for fd in os.listdir("/proc/self/fd"):
                try:
                    if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                        os.write(int(fd), b"\\xc1\\xc1 this is not msgpack")
                except OSError:
                    pass
            import time
            time.sleep(5)

        def talk(event, context):
            print("to stdout", event.get("n"))
            print("to stderr", file=sys.stderr)
            os.write(1, b"raw fd write\\n")
            context.log("via context.log\\n")
            return "talked"

        def context_and_env(event, context):
            return {
                "aws_request_id": context.aws_request_id,
                "function_name": context.function_name,
                "function_version": context.function_version,
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "invoked_function_arn": context.invoked_function_arn,
                "log_group_name": context.log_group_name,
                "log_stream_name": context.log_stream_name,
                "remaining": context.get_remaining_time_in_millis(),
                "identity": context.identity.cognito_identity_id,
                "client_context": context.client_context.custom if context.client_context else None,
                "env": {k: os.environ.get(k) for k in (
                    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
                    "_HANDLER", "LAMBDA_TASK_ROOT", "AWS_REGION", "AWS_EXECUTION_ENV",
                    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "STAGE", "TZ",
                    "_X_AMZN_TRACE_ID")},
                "cwd": os.getcwd(),
            }
    ''',
    "init_counter.py": '''
        import os
        INITS = []
        INITS.append(os.getpid())

        def handler(event, context):
            return {"pid": os.getpid(), "inits": len(INITS)}
    ''',
    "broken_import.py": "import a_module_that_does_not_exist\n",
    "broken_init.py": "raise RuntimeError('init exploded')\n",
    "broken_syntax.py": "def handler(event, context)\n    return 1\n",
    "no_handler.py": "def other(event, context):\n    return 1\n",
}

FUNCTIONS = {
    "echo": {"handler": "fns.echo"},
    "none": {"handler": "fns.none"},
    "raises": {"handler": "fns.raises"},
    "async-echo": {"handler": "fns.async_echo"},
    "slow": {"handler": "fns.slow", "timeout": "500ms"},
    "hog": {"handler": "fns.hog", "memory_mb": 128},
    "exits": {"handler": "fns.exits"},
    "unserialisable": {"handler": "fns.unserialisable"},
    "huge": {"handler": "fns.huge", "memory_mb": 512},
    "garbage": {"handler": "fns.garbage"},
    "talk": {"handler": "fns.talk"},
    "ctx": {"handler": "fns.context_and_env", "timeout": "7s", "memory_mb": 256, "environment": {"STAGE": "test"}},
    "counter": {"handler": "init_counter.handler"},
    "broken-import": {"handler": "broken_import.handler"},
    "broken-init": {"handler": "broken_init.handler"},
    "broken-syntax": {"handler": "broken_syntax.handler"},
    "no-handler": {"handler": "no_handler.handler"},
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = make_daemon(tmp_path_factory.mktemp("handlers"), FUNCTIONS, CODE).start()
    yield d
    assert d.stop() == 0, d.output()


def function_error(reply) -> dict:  # type: ignore[no-untyped-def]
    assert reply.status == 200, reply.body
    assert reply.headers.get("x-amz-function-error") == "Unhandled", reply.headers
    return json.loads(reply.body)


def assert_recovers(daemon: Daemon, function: str, expected: object) -> None:
    reply = daemon.invoke(function, {"ok": True})
    assert reply.status == 200 and "x-amz-function-error" not in reply.headers, reply.body
    assert reply.json() == expected
    assert daemon.process is not None and daemon.process.poll() is None


def test_result_round_trip(daemon: Daemon) -> None:
    event = {"s": "ünïcode", "n": 1.5, "list": [1, None, True], "nested": {"a": {"b": []}}}
    reply = daemon.invoke("echo", event)
    assert reply.status == 200
    assert reply.json() == event
    assert reply.headers["x-amz-executed-version"] == "$LATEST"
    assert len(reply.headers["x-amzn-requestid"]) == 36


def test_empty_body_is_an_empty_event_and_none_is_null(daemon: Daemon) -> None:
    assert daemon.invoke("echo", raw=b"").json() == {}
    reply = daemon.invoke("none")
    assert reply.status == 200 and reply.body == b"null"


def test_async_def_handler(daemon: Daemon) -> None:
    assert daemon.invoke("async-echo", {"a": 1}).json() == {"async": {"a": 1}}


def test_handler_exception(daemon: Daemon) -> None:
    reply = daemon.invoke("raises", {"n": 7})
    error = function_error(reply)
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "bad input: 7"
    assert error["requestId"] == reply.headers["x-amzn-requestid"]
    assert any("fns.py" in frame and "raise ValueError" in frame for frame in error["stackTrace"])
    assert not any("bootstrap.py" in frame for frame in error["stackTrace"])
    assert_recovers(daemon, "raises", "fine")


def test_timeout_kills_the_process_and_the_next_call_works(daemon: Daemon) -> None:
    error = function_error(daemon.invoke("slow"))
    assert error["errorType"] == "Sandbox.Timedout"
    assert error["errorMessage"].endswith("Error: Task timed out after 0.50 seconds")
    assert_recovers(daemon, "slow", "fast")
    assert "Status: timeout" in daemon.function_log("slow")


def test_out_of_memory(daemon: Daemon) -> None:
    reply = daemon.invoke("hog")
    error = function_error(reply)
    assert error["errorType"] == "Runtime.OutOfMemory"
    assert error["errorMessage"] == (
        f"RequestId: {reply.headers['x-amzn-requestid']} Error: Runtime exited with error: out of memory"
    )
    assert_recovers(daemon, "hog", "small")


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("os_exit", "Runtime exited with error: exit status 3"),
        ("signal", "Runtime exited with error: signal: segmentation fault"),
        ("sys_exit", "Runtime exited without providing a reason"),
    ],
)
def test_process_exit_mid_invocation(daemon: Daemon, how: str, message: str) -> None:
    reply = daemon.invoke("exits", {"how": how})
    error = function_error(reply)
    assert error["errorType"] == "Runtime.ExitError"
    assert error["errorMessage"] == f"RequestId: {reply.headers['x-amzn-requestid']} Error: {message}"
    assert_recovers(daemon, "exits", "alive")


def test_result_that_is_not_json(daemon: Daemon) -> None:
    error = function_error(daemon.invoke("unserialisable"))
    assert error["errorType"] == "Runtime.MarshalError"
    assert error["errorMessage"].startswith("Unable to marshal response:")
    assert_recovers(daemon, "unserialisable", [1, 2])


def test_response_too_large(daemon: Daemon) -> None:
    error = function_error(daemon.invoke("huge"))
    assert error["errorType"] == "Function.ResponseSizeTooLarge"
    assert "6291556 bytes" in error["errorMessage"]


def test_garbage_on_the_channel(daemon: Daemon) -> None:
    error = function_error(daemon.invoke("garbage"))
    assert error["errorType"] == "Runtime.InvalidResponse"
    assert_recovers(daemon, "garbage", "clean")


@pytest.mark.parametrize(
    ("function", "error_type", "message"),
    [
        ("broken-import", "Runtime.ImportModuleError",
         "Unable to import module 'broken_import': No module named 'a_module_that_does_not_exist'"),
        ("broken-init", "RuntimeError", "init exploded"),
        ("broken-syntax", "Runtime.UserCodeSyntaxError", "Syntax error in module 'broken_syntax'"),
        ("no-handler", "Runtime.HandlerNotFound", "Handler 'handler' missing on module 'no_handler'"),
    ],
)
def test_init_errors(daemon: Daemon, function: str, error_type: str, message: str) -> None:
    for _ in range(2):  # a failed init leaves nothing behind: the next call tries afresh
        error = function_error(daemon.invoke(function))
        assert error["errorType"] == error_type
        assert error["errorMessage"].startswith(message)
        assert not any("importlib" in frame or "bootstrap.py" in frame for frame in error.get("stackTrace", []))
    assert daemon.processes(function) == {"starting": 0, "idle": 0, "busy": 0}


def test_qualified_name_reaches_the_context(daemon: Daemon) -> None:
    reply = daemon.invoke("ctx:$LATEST")
    assert reply.json()["invoked_function_arn"] == "arn:aws:lambda:us-east-1:000000000000:function:ctx:$LATEST"


def test_init_runs_once_per_process(daemon: Daemon) -> None:
    first = daemon.invoke("counter").json()
    second = daemon.invoke("counter").json()
    assert first == second == {"pid": first["pid"], "inits": 1}


def test_context_and_environment(daemon: Daemon, tmp_path: Path) -> None:
    client_context = base64.b64encode(json.dumps({"custom": {"k": "v"}}).encode()).decode()
    reply = daemon.invoke("ctx", headers={"X-Amz-Client-Context": client_context,
                                          "X-Amzn-Trace-Id": "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700"})
    body = reply.json()
    assert body["aws_request_id"] == reply.headers["x-amzn-requestid"]
    assert body["function_name"] == "ctx"
    assert body["function_version"] == "$LATEST"
    assert body["memory_limit_in_mb"] == "256"
    assert body["invoked_function_arn"] == "arn:aws:lambda:us-east-1:000000000000:function:ctx"
    assert body["log_group_name"] == "/aws/lambda/ctx"
    assert "[$LATEST]" in body["log_stream_name"]
    assert 5000 < body["remaining"] <= 7000
    assert body["identity"] is None
    assert body["client_context"] == {"k": "v"}
    code_dir = str(daemon.root / "functions")
    assert body["env"] == {
        "AWS_LAMBDA_FUNCTION_NAME": "ctx",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "_HANDLER": "fns.context_and_env",
        "LAMBDA_TASK_ROOT": code_dir,
        "AWS_REGION": "us-east-1",
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info.major}.{sys.version_info.minor}",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/ctx",
        "STAGE": "test",
        "TZ": ":UTC",
        "_X_AMZN_TRACE_ID": "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700",
    }
    assert body["cwd"] == code_dir


def test_output_is_captured_tagged_and_framed(daemon: Daemon) -> None:
    reply = daemon.invoke("talk", {"n": 42}, headers={"X-Amz-Log-Type": "Tail"})
    request_id = reply.headers["x-amzn-requestid"]
    tail = base64.b64decode(reply.headers["x-amz-log-result"]).decode()
    lines = tail.splitlines()
    assert lines[0] == f"START RequestId: {request_id} Version: $LATEST"
    assert "to stdout 42" in lines and "to stderr" in lines and "via context.log" in lines
    assert lines[-2] == f"END RequestId: {request_id}"
    assert lines[-1].startswith(f"REPORT RequestId: {request_id}\tDuration: ")
    assert "\tMemory Size: 128 MB\tMax Memory Used: " in lines[-1]

    def logged() -> bool:
        log = daemon.function_log("talk")
        return f"{request_id}\tto stdout 42" in log and f"REPORT RequestId: {request_id}" in log

    wait_until(logged, what="the function log file")
    log = daemon.function_log("talk")
    assert f"{request_id}\traw fd write" in log
    assert f"{request_id}\tto stderr" in log
    wait_until(lambda: f"fn/talk {request_id}\tto stdout 42" in daemon.output(), what="the daemon log")


def test_log_tail_is_at_most_4kb(daemon: Daemon) -> None:
    payload = {"n": "y" * 10_000}
    reply = daemon.invoke("talk", payload, headers={"X-Amz-Log-Type": "Tail"})
    tail = base64.b64decode(reply.headers["x-amz-log-result"])
    assert len(tail) <= 4096
    assert tail.rstrip().splitlines()[-1].startswith(b"REPORT RequestId:")


def test_errors_are_counted_by_type(daemon: Daemon) -> None:
    daemon.invoke("raises", {"n": 1})
    text = daemon.metrics()
    assert metric_value(text, "eventd_invocation_errors_total", function="raises", error_type="ValueError") >= 1
    assert metric_value(text, "eventd_invocations_total", function="raises", outcome="error") >= 1
    assert metric_value(text, "eventd_invocations_total", function="echo", outcome="success") >= 1
