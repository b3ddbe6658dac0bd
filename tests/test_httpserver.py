"""eventd's HTTP/1.1 server on real sockets: keep-alive, pipelining, bodies, limits, errors, drain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from eventd.httpserver import HttpServer, Request, Response, RouteError, Router, json_response
from tests.harness import until

CAP = 1000


async def echo(request: Request) -> Response:
    if request.raw_path == "/boom":
        raise RuntimeError("handler bug")
    if request.raw_path == "/slow":
        request.app["entered"].set()
        await request.app["release"].wait()
    return json_response({"method": request.method, "path": request.raw_path, "body": request.body.decode(),
                          "host": request.host, "remote": request.remote})


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    srv = HttpServer(echo, max_body=CAP, app={"entered": asyncio.Event(), "release": asyncio.Event()}, name="test")
    await srv.start("127.0.0.1", 0)
    yield srv
    await srv.stop(0)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 10)
    return status, headers, body


async def connect(server: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def last_answer(server: HttpServer, data: bytes) -> tuple[int, dict[str, str]]:
    """Send `data` on a new connection and expect one answer, after which the server closes it."""
    reader, writer = await connect(server)
    writer.write(data)
    status, headers, _ = await read_response(reader)
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed
    writer.close()
    return status, headers


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def test_keep_alive_answers_several_requests_on_one_connection(server: HttpServer) -> None:
    reader, writer = await connect(server)
    for n in range(3):
        writer.write(post(f"/n{n}", b"x" * n))
        status, headers, body = await read_response(reader)
        assert status == 200 and headers["content-type"] == "application/json" and "date" in headers
        assert b'"path":"/n%d"' % n in body and b'"body":"%s"' % (b"x" * n) in body
        assert b'"remote":"127.0.0.1"' in body and b'"host":"h"' in body
    writer.close()


async def test_pipelined_requests_are_answered_in_order(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"".join(post(f"/p{n}", b"%d" % n) for n in range(5)))
    for n in range(5):
        _, _, body = await read_response(reader)
        assert b'"path":"/p%d"' % n in body
    writer.close()


async def test_a_chunked_body_is_assembled(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    status, _, body = await read_response(reader)
    assert status == 200 and b'"body":"abcde"' in body
    writer.close()


async def test_expect_100_continue_gets_the_interim_answer_first(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"ok")
    status, _, body = await read_response(reader)
    assert status == 200 and b'"body":"ok"' in body
    writer.close()


async def test_a_declared_body_over_the_cap_is_refused_before_it_is_sent(server: HttpServer) -> None:
    status, headers = await last_answer(
        server, f"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: {CAP + 1}\r\nExpect: 100-continue\r\n\r\n".encode())
    assert status == 413 and headers["connection"] == "close"


async def test_a_chunked_body_over_the_cap_is_refused(server: HttpServer) -> None:
    chunk = b"%x\r\n%s\r\n" % (600, b"y" * 600)
    status, _ = await last_answer(
        server, b"POST /big HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk + chunk)
    assert status == 413


async def test_a_body_at_the_cap_is_accepted(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(post("/cap", b"z" * CAP))
    status, _, _ = await read_response(reader)
    assert status == 200
    writer.close()


async def test_garbage_gets_400_and_the_connection_is_closed(server: HttpServer) -> None:
    status, headers = await last_answer(server, b"NOT HTTP AT ALL\r\n\r\n")
    assert status == 400 and headers["connection"] == "close"


async def test_http_1_0_closes_unless_asked_to_keep_alive(server: HttpServer) -> None:
    status, headers = await last_answer(server, b"GET /old HTTP/1.0\r\n\r\n")
    assert status == 200 and headers["connection"] == "close"
    reader, writer = await connect(server)
    for _ in range(2):
        writer.write(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers["connection"] == "keep-alive"
    writer.close()


async def test_connection_close_from_the_client_is_honoured(server: HttpServer) -> None:
    status, headers = await last_answer(server, b"GET /bye HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert status == 200 and headers["connection"] == "close"


async def test_head_has_the_length_but_no_body(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: " in head
    writer.write(b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n")  # the next answer starts right after the head
    status, _, body = await read_response(reader)
    assert status == 200 and b'"path":"/after"' in body
    writer.close()


async def test_a_handler_that_raises_gets_500_and_the_connection_lives_on(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /boom HTTP/1.1\r\nHost: h\r\n\r\n")
    status, _, body = await read_response(reader)
    assert status == 500 and body == b'{"message":"Internal Server Error"}'
    writer.write(b"GET /fine HTTP/1.1\r\nHost: h\r\n\r\n")
    status, _, _ = await read_response(reader)
    assert status == 200
    writer.close()


async def test_stop_closes_idle_connections_and_lets_in_flight_requests_finish(server: HttpServer) -> None:
    port = server.port
    idle_reader, idle_writer = await connect(server)
    busy_reader, busy_writer = await connect(server)
    busy_writer.write(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
    await asyncio.wait_for(server.app["entered"].wait(), 10)
    stopping = asyncio.create_task(server.stop(10))
    assert await asyncio.wait_for(idle_reader.read(), 10) == b""  # the idle one is closed at once
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)  # no new connections
    assert not stopping.done()
    server.app["release"].set()
    status, headers, _ = await read_response(busy_reader)
    assert status == 200 and headers["connection"] == "close"
    await asyncio.wait_for(stopping, 10)
    idle_writer.close()
    busy_writer.close()


async def test_router_matches_literal_and_template_paths_and_says_404_and_405() -> None:
    router = Router()

    async def handler(request: Request) -> Response:
        return Response(200)

    router.add("GET", "/health", handler)
    router.add("POST", "/functions/{name}/invocations", handler)
    router.add("DELETE", "/functions/{name}/invocations", handler)

    def request(method: str, path: str) -> Request:
        from multidict import CIMultiDict
        return Request(method, path, CIMultiDict(), b"", "", None, True)

    assert router.resolve(request("GET", "/health")) is handler
    assert router.resolve(request("HEAD", "/health")) is handler
    matched = request("POST", "/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A0%3Afunction%3Af/invocations")
    router.resolve(matched)
    assert matched.match_info == {"name": "arn:aws:lambda:us-east-1:0:function:f"}
    with pytest.raises(RouteError) as missing:
        router.resolve(request("GET", "/nope"))
    assert missing.value.status == 404
    with pytest.raises(RouteError) as wrong:
        router.resolve(request("GET", "/functions/f/invocations"))
    assert wrong.value.status == 405 and wrong.value.headers == [("Allow", "DELETE, POST")]


async def test_a_client_that_half_closes_still_gets_its_answers(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n" + post("/two", b"2"))
    writer.write_eof()  # done sending, still reading (HTTP/1.0-style clients, `nc -N`)
    await asyncio.wait_for(server.app["entered"].wait(), 10)
    await until(lambda: any(c._eof for c in server._connections))  # the server has seen the EOF
    server.app["release"].set()
    for path in (b"/slow", b"/two"):
        status, _, body = await read_response(reader)
        assert status == 200 and b'"path":"%s"' % path in body
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_a_head_over_the_limit_gets_431(server: HttpServer) -> None:
    huge = "x" * (64 * 1024)
    status, headers = await last_answer(server, f"GET /h HTTP/1.1\r\nHost: h\r\nX-Big: {huge}\r\n\r\n".encode())
    assert status == 431 and headers["connection"] == "close"
