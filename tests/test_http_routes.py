"""HTTP routes on the public listener through a real daemon: event mapping, response rules, errors,
auth and CORS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Daemon, free_port, http, make_daemon, metric_value, wait_until

CODE = {
    "web.py": '''
        import base64, json, time

        def echo_event(event, context):
            return event

        def respond(event, context):
            wanted = json.loads(event.get("body") or "{}")
            return wanted

        def cors_happy(event, context):
            return {"statusCode": 200, "headers": {"Access-Control-Allow-Origin": "*"}, "body": "x"}

        def plain(event, context):
            return {"hello": event.get("pathParameters")}

        def text(event, context):
            return "just text"

        def boom(event, context):
            raise RuntimeError("broken")

        def slow(event, context):
            time.sleep(5)

        def record(event, context):
            with open(event["queryStringParameters"]["file"], "a") as f:
                f.write(json.dumps(event) + "\\n")
    ''',
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("http")
    (root / "token.txt").write_text("file-token\n")
    public = free_port()
    os.environ["EVENTD_TEST_TOKEN"] = "env-token"
    os.environ["EVENTD_TEST_HMAC"] = "shh"
    routes = [
        {"http": {"method": "POST", "path": "/echo/{id}"}, "function": "echo"},
        {"http": {"method": ["GET", "POST"], "path": "/files/{proxy+}"}, "function": "echo"},
        {"http": {"method": "GET", "path": "/files/special"}, "function": "plain"},
        {"http": {"method": "POST", "path": "/respond"}, "function": "respond"},
        {"http": {"path": "/text"}, "function": "text"},
        {"http": {"path": "/boom"}, "function": "boom"},
        {"http": {"path": "/slow"}, "function": "slow"},
        {"http": {"method": "POST", "path": "/small"}, "function": "echo", "max_body": 10},
        {"http": {"method": "POST", "path": "/later"}, "function": "record", "invocation": "async"},
        {"http": {"path": "/bearer-env"}, "function": "plain", "auth": {"bearer_env": "EVENTD_TEST_TOKEN"}},
        {"http": {"path": "/bearer-file"}, "function": "plain", "auth": {"bearer_file": "../token.txt"}},
        {"http": {"method": "POST", "path": "/hook"}, "function": "plain",
         "auth": {"hmac_env": "EVENTD_TEST_HMAC", "header": "X-Hub-Signature-256"}},
        {"http": {"method": "GET", "path": "/cors-own"}, "function": "cors_happy",
         "cors": {"allow_origins": ["https://app.example"]}},
        {"http": {"method": "POST", "path": "/big-async"}, "function": "record", "invocation": "async"},
        {"http": {"method": "GET", "path": "/cors"}, "function": "plain",
         "cors": {"allow_origins": ["https://app.example"], "allow_methods": ["GET", "POST"], "max_age": "10m"}},
    ]
    functions = {
        "echo": {"handler": "web.echo_event"}, "respond": {"handler": "web.respond"},
        "plain": {"handler": "web.plain"}, "text": {"handler": "web.text"}, "boom": {"handler": "web.boom"},
        "slow": {"handler": "web.slow", "timeout": "500ms"}, "record": {"handler": "web.record"},
        "cors_happy": {"handler": "web.cors_happy"},
    }
    d = make_daemon(root / "d", functions, CODE, http={"listen": f"127.0.0.1:{public}"}, routes=routes)
    d.public = f"http://127.0.0.1:{public}"  # type: ignore[attr-defined]
    d.start()
    yield d
    d.stop()


def call(daemon: Daemon, method: str, path: str, body: bytes | None = None, **headers: str) -> Any:
    return http(method, daemon.public + path, body, {k.replace("_", "-"): v for k, v in headers.items()})  # type: ignore[attr-defined]


def test_request_becomes_a_v2_event(daemon: Daemon) -> None:
    reply = call(daemon, "POST", "/echo/42?a=1&a=2&b=x%20y", b'{"n": 1}', Content_Type="application/json",
                 Cookie="c1=v1; c2=v2", X_Custom="Yes", User_Agent="tester")
    assert reply.status == 200
    event = reply.json()
    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /echo/{id}"
    assert event["rawPath"] == "/echo/42"
    assert event["rawQueryString"] == "a=1&a=2&b=x%20y"
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y"}
    assert event["pathParameters"] == {"id": "42"}
    assert event["cookies"] == ["c1=v1", "c2=v2"]
    assert event["headers"]["x-custom"] == "Yes" and "cookie" not in event["headers"]
    assert event["body"] == '{"n": 1}' and event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["http"]["method"] == "POST" and context["http"]["path"] == "/echo/42"
    assert context["http"]["sourceIp"] == "127.0.0.1" and context["http"]["userAgent"] == "tester"
    assert context["routeKey"] == "POST /echo/{id}" and context["stage"] == "$default"
    assert isinstance(context["timeEpoch"], int) and context["requestId"]


def test_binary_bodies_arrive_base64_encoded(daemon: Daemon) -> None:
    raw = bytes(range(256))
    event = call(daemon, "POST", "/echo/bin", raw, Content_Type="application/octet-stream").json()
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == raw


def test_greedy_paths_and_specific_routes_first(daemon: Daemon) -> None:
    greedy = call(daemon, "GET", "/files/a/b/c.txt").json()
    assert greedy["pathParameters"] == {"proxy": "a/b/c.txt"}
    assert call(daemon, "GET", "/files/special").json() == {"hello": None}


def test_response_rules(daemon: Daemon) -> None:
    reply = call(daemon, "POST", "/respond", json.dumps({
        "statusCode": 201, "headers": {"X-One": "1", "Content-Type": "text/plain"}, "body": "created",
        "cookies": ["a=1; Path=/", "b=2"]}).encode())
    assert reply.status == 201 and reply.body == b"created"
    assert reply.headers["x-one"] == "1" and reply.headers["content-type"] == "text/plain"
    binary = call(daemon, "POST", "/respond", json.dumps({
        "statusCode": 200, "body": base64.b64encode(b"\x00\x01").decode(), "isBase64Encoded": True}).encode())
    assert binary.body == b"\x00\x01"
    plain = call(daemon, "POST", "/respond", b'{"no": "statusCode"}')
    assert plain.status == 200 and plain.json() == {"no": "statusCode"}
    assert plain.headers["content-type"].startswith("application/json")
    assert call(daemon, "GET", "/text").body == b"just text"
    invalid = call(daemon, "POST", "/respond", b'{"statusCode": "teapot"}')
    assert invalid.status == 502 and invalid.json() == {"message": "Internal Server Error"}


def test_error_statuses(daemon: Daemon) -> None:
    assert call(daemon, "GET", "/nowhere").status == 404
    wrong = call(daemon, "DELETE", "/echo/1")
    assert wrong.status == 405 and wrong.headers["allow"] == "POST"
    assert call(daemon, "GET", "/boom").status == 502
    timed_out = call(daemon, "GET", "/slow")
    assert timed_out.status == 504 and timed_out.json() == {"message": "Endpoint request timed out"}
    too_big = call(daemon, "POST", "/small", b"x" * 11)
    assert too_big.status == 413
    assert call(daemon, "POST", "/small", b"x" * 10).status == 200
    for reply in (wrong, too_big):
        assert reply.headers["content-type"].startswith("application/json") and "message" in reply.json()
    text = daemon.metrics()
    assert metric_value(text, "eventd_http_requests_total", route="ANY /boom", status="502") == 1
    assert metric_value(text, "eventd_http_requests_total", route="", status="404") >= 1


def test_async_routes_answer_202_then_run(daemon: Daemon, tmp_path: Path) -> None:
    out = tmp_path / "later.jsonl"
    reply = call(daemon, "POST", f"/later?file={out}", b"payload")
    assert reply.status == 202 and reply.json()["requestId"]
    event = json.loads(wait_until(lambda: out.exists() and out.read_text(), what="the async run"))
    assert event["body"] == "payload" and event["requestContext"]["requestId"] == reply.json()["requestId"]


def test_bearer_auth(daemon: Daemon) -> None:
    assert call(daemon, "GET", "/bearer-env").status == 401
    assert call(daemon, "GET", "/bearer-env", Authorization="Bearer wrong").status == 401
    assert call(daemon, "GET", "/bearer-env", Authorization="Bearer env-token").status == 200
    assert call(daemon, "GET", "/bearer-file", Authorization="Bearer file-token").status == 200
    assert call(daemon, "GET", "/bearer-file", Authorization="Basic file-token").status == 401


def test_hmac_signature(daemon: Daemon) -> None:
    body = b'{"action": "opened"}'
    good = "sha256=" + hmac.new(b"shh", body, hashlib.sha256).hexdigest()
    assert call(daemon, "POST", "/hook", body, X_Hub_Signature_256=good).status == 200
    assert call(daemon, "POST", "/hook", body + b" ", X_Hub_Signature_256=good).status == 401
    assert call(daemon, "POST", "/hook", body).status == 401
    assert call(daemon, "POST", "/hook", body, X_Hub_Signature_256="sha256=00").status == 401


def test_cors(daemon: Daemon) -> None:
    preflight = call(daemon, "OPTIONS", "/cors", Origin="https://app.example",
                     Access_Control_Request_Method="GET")
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert preflight.headers["access-control-allow-methods"] == "GET, POST"
    assert preflight.headers["access-control-max-age"] == "600"
    reply = call(daemon, "GET", "/cors", Origin="https://app.example")
    assert reply.headers["access-control-allow-origin"] == "https://app.example"
    other = call(daemon, "GET", "/cors", Origin="https://evil.example")
    assert "access-control-allow-origin" not in other.headers


def test_a_missing_secret_stops_the_start(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    daemon = daemon_factory({"f": {"handler": "web.plain"}}, CODE, http={"listen": f"127.0.0.1:{port}"},
                            routes=[{"http": {"path": "/x"}, "function": "f", "auth": {"bearer_env": "NOT_SET_ANYWHERE"}}])
    daemon.start(wait_ready=False)
    assert daemon.process is not None
    assert daemon.process.wait(20) == 78
    assert "environment variable NOT_SET_ANYWHERE is not set" in daemon.output()


def test_encoded_slashes_stay_in_their_segment(daemon: Daemon) -> None:
    # Regression: matching on the decoded path split a%2Fb into two segments (a 404).
    event = call(daemon, "POST", "/echo/a%2Fb", b"{}").json()
    assert event["pathParameters"] == {"id": "a/b"}


def test_route_cors_overrides_the_functions_own_headers(daemon: Daemon) -> None:
    # Regression: a function's Access-Control-Allow-Origin leaked out to origins CORS does not allow.
    evil = call(daemon, "GET", "/cors-own", Origin="https://evil.example")
    assert "access-control-allow-origin" not in evil.headers
    good = call(daemon, "GET", "/cors-own", Origin="https://app.example")
    assert good.headers["access-control-allow-origin"] == "https://app.example"


def test_async_routes_take_events_up_to_the_async_limit(daemon: Daemon) -> None:
    # Regression: an async route took 6 MiB bodies although an async event may hold 1 MiB.
    reply = call(daemon, "POST", "/big-async", b"x" * (2 * 1024 * 1024))
    assert reply.status == 413
