"""The Invoke API as Lambda's own clients see it: boto3, the AWS CLI, and raw HTTP for edge cases."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import botocore
import pytest
from botocore.config import Config as BotoConfig

from tests.harness import Daemon, Gate, http, make_daemon

CODE = {
    "fns.py": '''
        def echo(event, context):
            print("echo called")
            return event

        def fails(event, context):
            raise KeyError("missing")
    ''',
    "gated.py": Gate.HANDLER,
}
FUNCTIONS = {
    "echo": {"handler": "fns.echo", "timeout": "4s", "memory_mb": 192, "description": "says it back",
             "environment": {"AB": "1"}},
    "fails": {"handler": "fns.fails"},
    "single": {"handler": "gated.handler", "concurrency": 1},
}
ARN = "arn:aws:lambda:us-east-1:000000000000:function"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = make_daemon(tmp_path_factory.mktemp("api"), FUNCTIONS, CODE).start()
    yield d
    d.stop()


def lambda_client(daemon: Daemon, **config: Any) -> Any:
    return boto3.client(
        "lambda", endpoint_url=daemon.url, region_name="us-east-1", aws_access_key_id="x",
        aws_secret_access_key="x", config=BotoConfig(retries={"total_max_attempts": 1}, **config),
    )


def test_boto3_invoke(daemon: Daemon) -> None:
    response = lambda_client(daemon).invoke(FunctionName="echo", Payload=b'{"a": [1, 2]}', LogType="Tail")
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert response["ExecutedVersion"] == "$LATEST"
    assert json.loads(response["Payload"].read()) == {"a": [1, 2]}
    log = base64.b64decode(response["LogResult"]).decode()
    assert "echo called" in log and "REPORT RequestId:" in log


def test_boto3_unsigned_client(daemon: Daemon) -> None:
    client = lambda_client(daemon, signature_version=botocore.UNSIGNED)
    assert json.loads(client.invoke(FunctionName="echo", Payload=b"{}")["Payload"].read()) == {}


def test_boto3_function_error(daemon: Daemon) -> None:
    response = lambda_client(daemon).invoke(FunctionName="fails")
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    error = json.loads(response["Payload"].read())
    assert error["errorType"] == "KeyError" and error["errorMessage"] == "'missing'"


@pytest.mark.parametrize(
    "name", ["echo", f"{ARN}:echo", f"{ARN}:echo:$LATEST", "000000000000:function:echo", "echo:$LATEST"]
)
def test_boto3_names_and_arns(daemon: Daemon, name: str) -> None:
    response = lambda_client(daemon).invoke(FunctionName=name, Payload=b'{"n": 1}')
    assert json.loads(response["Payload"].read()) == {"n": 1}


def test_boto3_errors(daemon: Daemon) -> None:
    client = lambda_client(daemon)
    with pytest.raises(client.exceptions.ResourceNotFoundException, match=f"Function not found: {ARN}:nope"):
        client.invoke(FunctionName="nope")
    with pytest.raises(client.exceptions.ResourceNotFoundException, match=f"{ARN}:echo:7"):
        client.invoke(FunctionName="echo", Qualifier="7")
    with pytest.raises(client.exceptions.InvalidParameterValueException, match="does not match"):
        client.invoke(FunctionName="echo:$LATEST", Qualifier="prod")
    with pytest.raises(client.exceptions.InvalidRequestContentException, match="Could not parse request body"):
        client.invoke(FunctionName="echo", Payload=b"{not json")
    with pytest.raises(client.exceptions.RequestTooLargeException):
        client.invoke(FunctionName="echo", Payload=b'"' + b"x" * (6 * 1024 * 1024) + b'"')


def test_boto3_throttle(daemon: Daemon, tmp_path: Path) -> None:
    gate = Gate(tmp_path / "g.sock")
    client = lambda_client(daemon)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(daemon.invoke, "single", {"gate": gate.path})
        gate.wait_arrivals(1)
        with pytest.raises(client.exceptions.TooManyRequestsException) as caught:
            client.invoke(FunctionName="single", Payload=b"{}")
        assert caught.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
        gate.close()
        assert held.result(timeout=20).status == 200


def test_boto3_dry_run_and_event(daemon: Daemon) -> None:
    client = lambda_client(daemon)
    assert client.invoke(FunctionName="echo", InvocationType="DryRun")["StatusCode"] == 204
    response = client.invoke(FunctionName="echo", InvocationType="Event", Payload=b'{"later": true}')
    assert response["StatusCode"] == 202 and response["Payload"].read() == b""
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="nope", InvocationType="DryRun")


def test_boto3_list_and_get(daemon: Daemon) -> None:
    client = lambda_client(daemon)
    functions = client.list_functions()["Functions"]
    assert [f["FunctionName"] for f in functions] == ["echo", "fails", "single"]
    pages = list(client.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2}))
    assert [[f["FunctionName"] for f in p["Functions"]] for p in pages] == [["echo", "fails"], ["single"]]
    config = client.get_function(FunctionName="echo")["Configuration"]
    assert config["FunctionArn"] == f"{ARN}:echo"
    assert config["Handler"] == "fns.echo"
    assert config["Timeout"] == 4 and config["MemorySize"] == 192
    assert config["Description"] == "says it back"
    assert config["Environment"] == {"Variables": {"AB": "1"}}
    assert config["State"] == "Active" and config["Version"] == "$LATEST"
    single = client.get_function(FunctionName=f"{ARN}:single")
    assert single["Concurrency"] == {"ReservedConcurrentExecutions": 1}
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function(FunctionName="nope")


def test_raw_http_edges(daemon: Daemon) -> None:
    url = f"{daemon.url}/2015-03-31/functions/echo/invocations"
    # what boto3 sends: no content type, percent-encoded names
    reply = http("POST", f"{daemon.url}/2015-03-31/functions/{quote(ARN + ':echo', safe='')}/invocations", b"[1]")
    assert reply.status == 200 and reply.json() == [1]
    reply = http("POST", url, b"{}", {"X-Amz-Invocation-Type": "Sideways"})
    assert reply.status == 400 and reply.headers["x-amzn-errortype"] == "InvalidParameterValueException"
    assert "Sideways" in reply.json()["message"]
    reply = http("POST", url, b"{}", {"X-Amz-Invocation-Type": "Event"})
    assert reply.status == 202 and reply.body == b"" and len(reply.headers["x-amzn-requestid"]) == 36
    # async payloads are capped at 1 MB, as in Lambda
    reply = http("POST", url, b'"' + b"x" * (1024 * 1024) + b'"', {"X-Amz-Invocation-Type": "Event"})
    assert reply.status == 413 and reply.headers["x-amzn-errortype"] == "RequestTooLargeException"
    assert "1048576 bytes" in reply.json()["message"]  # the async limit, not the sync one
    reply = http("POST", url, b"{bad", {"X-Amz-Invocation-Type": "Event"})
    assert reply.status == 400 and reply.headers["x-amzn-errortype"] == "InvalidRequestContentException"
    reply = http("POST", url, b"\x87 not utf-8")
    assert reply.status == 400 and reply.json()["Type"] == "User"
    reply = http("POST", url, b"{}", {"X-Amz-Client-Context": "%%%"})
    assert reply.status == 400 and reply.headers["x-amzn-errortype"] == "InvalidRequestContentException"
    assert http("POST", url, b"123456789012345678901234567890").json() == 123456789012345678901234567890
    reply = http("GET", f"{daemon.url}/no/such/path")
    assert reply.status == 404 and reply.headers["content-type"].startswith("application/json")


def _raw_exchange(daemon: Daemon, data: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Send bytes on a fresh connection; the one answer (status, headers, JSON body)."""
    host, port = daemon.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            received += conn.recv(65536)
        head, _, body = received.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
        while len(body) < int(headers["content-length"]):
            body += conn.recv(65536)
    return int(lines[0].split()[1]), headers, json.loads(body)


def test_requests_the_server_refuses_get_lambda_errors(daemon: Daemon) -> None:
    # a body over 6 MB is refused from its Content-Length, before it is sent
    status, headers, body = _raw_exchange(
        daemon, b"POST /2015-03-31/functions/echo/invocations HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 7000000\r\n\r\n")
    assert status == 413 and headers["x-amzn-errortype"] == "RequestTooLargeException"
    assert headers["connection"] == "close" and "6291456 bytes" in body["message"]
    status, headers, body = _raw_exchange(daemon, b"\x16\x03\x01 not http\r\n\r\n")  # TLS to a plain port
    assert status == 400 and body["Type"] == "User" and headers["x-amzn-errortype"]
    status, headers, body = _raw_exchange(daemon, b"GET /2015-03-31/functions/echo/invocations HTTP/1.1\r\n\r\n")
    assert status == 405 and headers["allow"] == "POST" and headers["x-amzn-errortype"] == "MethodNotAllowedException"


def test_health_and_ready(daemon: Daemon) -> None:
    assert http("GET", daemon.url + "/healthz").json() == {"status": "ok"}
    assert http("GET", daemon.url + "/readyz").json() == {"status": "ready", "problems": []}


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed")
def test_aws_cli(daemon: Daemon, tmp_path: Path) -> None:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    base = ["aws", "lambda", "--endpoint-url", daemon.url]
    out = tmp_path / "out.json"
    done = subprocess.run([*base, "invoke", "--function-name", "echo", "--payload", '{"cli": true}', str(out)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["StatusCode"] == 200
    assert json.loads(out.read_text()) == {"cli": True}
    done = subprocess.run([*base, "list-functions"], env=env, capture_output=True, text=True, timeout=60)
    assert [f["FunctionName"] for f in json.loads(done.stdout)["Functions"]] == ["echo", "fails", "single"]
    done = subprocess.run([*base, "get-function", "--function-name", "nope"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert "(ResourceNotFoundException)" in done.stderr and "Function not found" in done.stderr
