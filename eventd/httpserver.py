"""eventd's HTTP/1.1 server: the Invoke API listener and the public HTTP-route listener both run on it.

Why not aiohttp's server: on this project's 2-core reference machine a bare aiohttp handler answers
about 7,500 requests/s, which is below what the async-accept path alone must take (10,000 events/s),
while the same loop on httptools (the C parser uvicorn uses) answers about 49,000. The server keeps
to what eventd's listeners need: keep-alive and pipelining (answers in request order), Content-Length
and chunked request bodies, `Expect: 100-continue`, a body size cap answered before the body is
read, HEAD, a keep-alive idle timeout, a slow-request timeout, and a drain on stop. Responses always
carry a Content-Length (no streaming). aiohttp stays eventd's HTTP client.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import httptools
import orjson
from multidict import CIMultiDict, MultiDict, MultiDictProxy

log = logging.getLogger(__name__)

#: an idle keep-alive connection is closed after this long (aiohttp's and nginx's default is 75 s)
KEEPALIVE_TIMEOUT_S = 75.0
#: a request whose head or body has made no progress for this long is dropped (slow clients)
REQUEST_TIMEOUT_S = 60.0
#: pipelined requests queued on one connection before it stops reading more
MAX_PIPELINED = 32
#: request line and headers together; more is answered 431 (httptools itself sets no limit)
MAX_HEAD_BYTES = 64 * 1024

_STATUS_LINES = {status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode())
                 for status in http.HTTPStatus}
_NO_BODY_STATUSES = frozenset({204, 304})
_NO_QUERY: MultiDictProxy[str] = MultiDictProxy(MultiDict())


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str | None = None
    #: extra headers, in order; a name may repeat (Set-Cookie)
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(value: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, orjson.dumps(value), "application/json", headers or [])


class Request:
    """One request, body and all (the server reads the whole body, up to its cap, before calling)."""

    __slots__ = (
        "_query",
        "app",
        "body",
        "headers",
        "http10",
        "keep_alive",
        "match_info",
        "method",
        "raw_path",
        "remote",
    )

    def __init__(self, method: str, raw_path: str, headers: CIMultiDict[str], body: bytes, remote: str,
                 app: Any, keep_alive: bool, http10: bool = False) -> None:
        self.method = method
        #: path and query exactly as sent (percent-encoding kept)
        self.raw_path = raw_path
        self.headers = headers
        self.body = body
        self.remote = remote
        #: what the listener's owner attached for its handlers
        self.app = app
        self.match_info: dict[str, str] = {}
        self.keep_alive = keep_alive
        self.http10 = http10
        self._query: MultiDictProxy[str] | None = None

    @property
    def path(self) -> str:
        """The path, percent-decoded (what routers of the Invoke API match on)."""
        return unquote(self.raw_path.partition("?")[0])

    @property
    def query(self) -> MultiDictProxy[str]:
        if self._query is None:
            raw = self.raw_path.partition("?")[2]
            self._query = (MultiDictProxy(MultiDict(parse_qsl(raw, keep_blank_values=True))) if raw
                           else _NO_QUERY)
        return self._query

    @property
    def host(self) -> str:
        return self.headers.get("Host", "")


Handler = Callable[[Request], Awaitable[Response]]
#: builds the answer the server itself gives: 400 (unparseable request), 413 (body over the cap),
#: 500 (the handler raised); the listener's owner decides the body format (Lambda's or API Gateway's)
ErrorPage = Callable[[int, str], Response]


def plain_error(status: int, message: str) -> Response:
    return json_response({"message": message}, status)


class HttpServer:
    def __init__(self, handler: Handler, *, max_body: int, error_page: ErrorPage = plain_error,
                 app: Any = None, name: str = "http") -> None:
        self.handler = handler
        self.max_body = max_body
        self.error_page = error_page
        self.app = app
        self.name = name
        self.closing = False
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._all_closed: asyncio.Event | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._date = b""
        self._date_second = -1

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, reuse_address=True,
                                                backlog=1024)
        self._sweeper = loop.call_later(5.0, self._sweep)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self, drain_timeout: float) -> None:
        """Stop accepting; answer what is in progress (up to `drain_timeout`), then close everything."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in list(self._connections):
            if connection.idle:
                connection.close()
        if self._connections:
            self._all_closed = asyncio.Event()
            try:
                await asyncio.wait_for(self._all_closed.wait(), drain_timeout)
            except TimeoutError:
                log.warning("%s listener: %d connections still busy after %.0f s; closing them.", self.name,
                            len(self._connections), drain_timeout)
        for connection in list(self._connections):
            connection.abort()
        if self._server is not None:
            await self._server.wait_closed()

    def date_header(self) -> bytes:
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = b"Date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._date

    def _forget(self, connection: _Connection) -> None:
        self._connections.discard(connection)
        if not self._connections and self._all_closed is not None:
            self._all_closed.set()

    def _sweep(self) -> None:
        """Close idle keep-alive connections and requests that stopped making progress."""
        now = time.monotonic()
        for connection in list(self._connections):
            if connection.idle and now - connection.last_activity > KEEPALIVE_TIMEOUT_S:
                connection.close()
            elif connection.receiving and now - connection.last_activity > REQUEST_TIMEOUT_S:
                connection.abort()
        self._sweeper = asyncio.get_running_loop().call_later(5.0, self._sweep)


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, runs them one at a time in order, writes the answers."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._remote = ""
        self._pending: deque[Request | Response] = deque()
        self._running = False
        self._reading = True
        self._closed = False
        #: set when the request being received is refused (body over the cap): its bytes are skipped
        self._refused = False
        self._can_write: asyncio.Future[None] | None = None
        #: resolved when a request is queued for the connection's answering task, which waits on it
        self._wakeup: asyncio.Future[None] | None = None
        self._answerer: asyncio.Task[None] | None = None
        self.receiving = False
        self.last_activity = time.monotonic()
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._content_length: bytes | None = None
        self._expect: bytes | None = None
        self._body: list[bytes] = []
        self._size = 0
        self._head_size = 0
        #: the client closed its sending side: answer what it sent, then close
        self._eof = False

    @property
    def idle(self) -> bool:
        return not self._running and not self._pending and not self.receiving

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._remote = peer[0] if isinstance(peer, tuple) else ""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._server._connections.add(self)
        if self._server.closing:
            self.close()
            return
        # one answering task per connection, woken per request: cheaper than a task per request
        self._answerer = asyncio.get_running_loop().create_task(self._answer_requests())

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "Protocol upgrades are not supported")
        except httptools.HttpParserError:
            if not self._refused:
                self._refuse(400, "Bad Request")

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._pending.clear()
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)
        self._wake()
        self._server._forget(self)

    def eof_received(self) -> bool:
        self._eof = True
        # keep the sending side open only to answer requests already received in full
        return bool(self._pending or self._running)

    def pause_writing(self) -> None:
        self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)
        self._can_write = None

    # --- httptools callbacks -------------------------------------------------------------------

    # No on_message_begin: one callback fewer per request. A message starts with its URL, and the
    # per-message state is reset when the previous message completes.
    def on_url(self, url: bytes) -> None:
        self.receiving = True
        self._url += url
        self._count_head(len(url))

    def _count_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEAD_BYTES and not self._refused:
            self._refuse(431, "Request Header Fields Too Large")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused:
            return
        self._count_head(len(name) + len(value))
        self._headers.append((name.decode("latin-1"), value.decode("utf-8", "replace")))
        if len(name) in (6, 14):  # the two headers the server itself acts on
            lowered = name.lower()
            if lowered == b"content-length":
                self._content_length = value
            elif lowered == b"expect":
                self._expect = value

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        length = self._content_length
        if length is not None and length.isdigit() and int(length) > self._server.max_body:
            self._refuse(413, "Request Entity Too Large")
            return
        if self._expect is not None and self._expect.lower() == b"100-continue" and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        if self._refused:
            return
        self._size += len(chunk)
        if self._size > self._server.max_body:  # chunked bodies have no length to check up front
            self._refuse(413, "Request Entity Too Large")
            return
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        self.receiving = False
        if self._refused:
            return
        parser = self._parser
        request = Request(
            parser.get_method().decode("latin-1"), self._url.decode("latin-1"),
            CIMultiDict(self._headers), b"".join(self._body), self._remote, self._server.app,
            parser.should_keep_alive(), parser.get_http_version() == "1.0",
        )
        self._url = b""
        self._headers = []
        self._content_length = self._expect = None
        self._body = []
        self._size = self._head_size = 0
        self._pending.append(request)
        if len(self._pending) >= MAX_PIPELINED and self._reading and self._transport is not None:
            self._reading = False
            self._transport.pause_reading()
        self._wake()

    # --- answering -----------------------------------------------------------------------------

    def _refuse(self, status: int, message: str) -> None:
        """Answer (after anything queued before it) and close: the rest of the stream cannot be trusted."""
        self._refused = True
        self.receiving = False
        response = self._server.error_page(status, message)
        response.headers.append(("Connection", "close"))
        self._pending.append(response)
        if self._transport is not None and self._reading:
            self._reading = False
            self._transport.pause_reading()
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _answer_requests(self) -> None:
        """Answer queued requests in order until the connection closes."""
        server = self._server
        loop = asyncio.get_running_loop()
        while not self._closed:
            if not self._pending:
                if self._eof:
                    self.close()
                    return
                self._wakeup = loop.create_future()
                await self._wakeup
                continue
            item = self._pending.popleft()
            if isinstance(item, Response):  # a refusal: the last thing this connection says
                self._write(item, head_only=False, keep_alive=False)
                self.close()
                return
            self._running = True
            try:
                response = await server.handler(item)
            except Exception:
                log.exception("%s listener: %s %s failed.", server.name, item.method, item.raw_path)
                response = server.error_page(500, "Internal Server Error")
            finally:
                self._running = False
            if self._closed:
                return
            keep_alive = item.keep_alive and not server.closing
            self._write(response, head_only=item.method == "HEAD", keep_alive=keep_alive, http10=item.http10)
            if not keep_alive:
                self.close()
                return
            if self._can_write is not None:
                await self._can_write
            if not self._reading and len(self._pending) < MAX_PIPELINED // 2 and not self._refused:
                self._reading = True
                if self._transport is not None:
                    self._transport.resume_reading()

    def _write(self, response: Response, *, head_only: bool, keep_alive: bool, http10: bool = False) -> None:
        if self._transport is None or self._closed:
            return
        status = response.status
        parts = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status, self._server.date_header()]
        if response.content_type is not None:
            parts.append(b"Content-Type: " + response.content_type.encode() + b"\r\n")
        if response.headers:
            parts.append("".join([f"{name}: {value}\r\n" for name, value in response.headers])
                         .encode("latin-1", "replace"))
        body = response.body
        if status in _NO_BODY_STATUSES or 100 <= status < 200:
            body = b""
        else:
            parts.append(b"Content-Length: %d\r\n" % len(body))
        if not keep_alive:
            if not any(name.lower() == "connection" for name, _ in response.headers):
                parts.append(b"Connection: close\r\n")
        elif http10:  # HTTP/1.0 closes by default: say the connection stays open
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        if body and not head_only:
            parts.append(body)
        self._transport.write(b"".join(parts))
        self.last_activity = time.monotonic()

    def close(self) -> None:
        if self._transport is not None and not self._closed:
            self._closed = True
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._closed = True
            self._transport.abort()


class Router:
    """Method + path template -> handler, for the Invoke API and the admin and producer endpoints.
    `{name}` matches one decoded path segment. Unknown paths raise 404, known paths with another
    method 405 (with Allow); the caller turns these into its own error format."""

    def __init__(self) -> None:
        self._literal: dict[str, dict[str, Handler]] = {}
        #: template segments -> methods, for templates with parameters
        self._templates: dict[tuple[str, ...], dict[str, Handler]] = {}
        #: (segment count, first segment or "{") -> the templates that can match such a path, in order
        self._buckets: dict[tuple[int, str], list[tuple[tuple[str, ...], dict[str, Handler]]]] = {}

    def add(self, method: str, template: str, handler: Handler) -> None:
        segments = tuple(template.strip("/").split("/"))
        if not any(segment.startswith("{") for segment in segments):
            methods = self._literal.setdefault(template, {})
        elif segments in self._templates:
            methods = self._templates[segments]
        else:
            methods = self._templates[segments] = {}
            first = "{" if segments[0].startswith("{") else segments[0]
            self._buckets.setdefault((len(segments), first), []).append((segments, methods))
        methods[method] = handler
        if method == "GET":
            methods.setdefault("HEAD", handler)

    def resolve(self, request: Request) -> Handler:
        path = request.path
        methods = self._literal.get(path)
        if methods is None:
            parts = path.strip("/").split("/")
            # templates led by a parameter are tried after those whose first segment is the path's
            candidates = self._buckets.get((len(parts), parts[0]), []) + self._buckets.get((len(parts), "{"), [])
            for segments, candidate in candidates:
                params = {}
                for pattern, part in zip(segments, parts, strict=True):
                    if pattern.startswith("{"):
                        if not part:
                            break
                        params[pattern[1:-1]] = part
                    elif pattern != part:
                        break
                else:
                    request.match_info = params
                    methods = candidate
                    break
        if methods is None:
            raise RouteError(404, "Not Found")
        handler = methods.get(request.method)
        if handler is None:
            raise RouteError(405, "Method Not Allowed", [("Allow", ", ".join(sorted(methods)))])
        return handler


class RouteError(Exception):
    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or []
