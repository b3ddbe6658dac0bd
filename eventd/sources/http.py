"""HTTP routes on the public listener (`http.listen`): requests become API Gateway HTTP API (payload
v2.0) events; the function's answer becomes the response, by the v2 rules.

Errors answer JSON as API Gateway does: unknown route 404, wrong method 405, body over the route's
limit 413, bad or missing credentials 401, throttled 429, function error 502, timeout 504.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from dataclasses import dataclass

import orjson

from eventd.api import MAX_SYNC_PAYLOAD
from eventd.asyncq import MAX_ASYNC_PAYLOAD, AsyncInvocations
from eventd.config.model import CorsSpec, HttpRouteSpec
from eventd.dispatch import Throttled
from eventd.errors import EventdError
from eventd.httpevents import (
    InvalidResponse,
    RouteTable,
    RouteTemplate,
    build_event,
    build_response,
    compile_template,
    route_key,
)
from eventd.httpserver import HttpServer, Request, Response
from eventd.invoke import Invoker
from eventd.metrics import LoopCounter, LoopHistogram, Metrics

log = logging.getLogger(__name__)


class RouteSecretError(EventdError):
    """A route's secret cannot be read at start (unset variable, unreadable file)."""


@dataclass
class _Route:
    spec: HttpRouteSpec
    name: str
    template: RouteTemplate
    secret: bytes | None


def _message(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, orjson.dumps({"message": message}), "application/json", headers or [])


class HttpSource:
    def __init__(self, routes: list[tuple[str, HttpRouteSpec]], listen: tuple[str, int], invoker: Invoker,
                 asyncq: AsyncInvocations, metrics: Metrics, drain_timeout: float) -> None:
        self._listen = listen
        self._invoker = invoker
        self._asyncq = asyncq
        self._metrics = metrics
        self._drain_timeout = drain_timeout
        self._routes = [
            _Route(spec, name, RouteTemplate(spec.http.methods(), spec.http.path), _secret(spec, name))
            for name, spec in routes
        ]
        self._table = RouteTable([route.template for route in self._routes])
        self._by_template = {id(route.template): route for route in self._routes}
        self.routes = [r.name for r in self._routes]
        # metric children, looked up once per label set rather than per request
        self._counters: dict[tuple[str, int], LoopCounter] = {}
        self._timers: dict[str, LoopHistogram] = {}
        self._server = HttpServer(self._handle, max_body=max((r.spec.max_body for r in self._routes), default=0),
                                  error_page=_message, name="HTTP routes")

    async def start(self) -> None:
        await self._server.start(*self._listen)

    async def stop(self) -> None:
        await self._server.stop(self._drain_timeout)

    async def _handle(self, request: Request) -> Response:
        started = time.perf_counter()
        route, response = await self._route_and_answer(request)
        label = route.name if route else ""
        if route is not None and route.spec.cors is not None:
            _add_cors(response, route.spec.cors, request)
        counter = self._counters.get((label, response.status))
        if counter is None:
            counter = self._counters[(label, response.status)] = self._metrics.loop_counter(
                self._metrics.http_requests, label, str(response.status))
        counter.inc()
        timer = self._timers.get(label)
        if timer is None:
            timer = self._timers[label] = self._metrics.loop_histogram(self._metrics.http_duration, label)
        timer.observe(time.perf_counter() - started)
        return response

    async def _route_and_answer(self, request: Request) -> tuple[_Route | None, Response]:
        # match on the path as sent: an encoded %2F stays inside its segment, as API Gateway has it
        path = request.raw_path.partition("?")[0]
        method = request.method
        # API Gateway's priority (most specific template, then a named method over ANY) lives in one place
        found = self._table.select(method, path)
        if found is not None:
            template, params = found
            return self._by_template[id(template)], await self._serve(self._by_template[id(template)], params, request)
        on_path = [r for r in self._routes if compile_template(r.template.path).match(path) is not None]
        if not on_path:
            return None, _message(404, "Not Found")
        route = on_path[0]
        if method == "OPTIONS" and route.spec.cors is not None:
            return route, _preflight(route.spec.cors, request)
        allowed = sorted({m for r in on_path for m in (r.template.method_set or ())})
        return route, _message(405, "Method Not Allowed", [("Allow", ", ".join(allowed))])

    async def _serve(self, route: _Route, params: dict[str, str], request: Request) -> Response:
        spec = route.spec
        if method_is_preflight(request) and spec.cors is not None:
            return _preflight(spec.cors, request)
        body = request.body
        if len(body) > spec.max_body:
            return _message(413, "Request Entity Too Large")
        if not _authorized(route, request, body):
            return _message(401, "Unauthorized")
        request_id = self._invoker.new_request_id()
        raw_path, _, raw_query = request.raw_path.partition("?")  # as sent, percent-encoding and all
        event = build_event(
            route_key=route_key(route.template, request.method),
            method=request.method, raw_path=raw_path, raw_query=raw_query,
            headers=list(request.headers.items()), body=body, path_parameters=params,
            source_ip=request.remote, request_id=request_id, domain_name=request.host,
            now_ms=int(time.time() * 1000),
        )
        payload = orjson.dumps(event)
        limit = MAX_ASYNC_PAYLOAD if spec.invocation == "async" else MAX_SYNC_PAYLOAD
        if len(payload) > limit:  # the event, base64 and all, must fit Lambda's invoke limits too
            return _message(413, "Request Entity Too Large")
        if spec.invocation == "async":
            event_id = await self._asyncq.accept(spec.function, payload, request_id)
            return Response(202, orjson.dumps({"requestId": event_id}), "application/json")
        try:
            result = await self._invoker.invoke_sync(spec.function, payload, request_id=request_id)
        except Throttled:
            return _message(429, "Too Many Requests")
        if result.error_type is not None:
            if result.error_type == "Sandbox.Timedout":
                return _message(504, "Endpoint request timed out")
            return _message(502, "Internal Server Error")
        try:
            answer = build_response(result.payload)
        except InvalidResponse as exc:
            log.warning("Route %s: the function's response is not a valid HTTP response: %s.", route.name, exc)
            return _message(502, "Internal Server Error")
        # with CORS configured on the route, eventd answers for it, not the function
        headers = [(name, value) for name, value in answer.headers
                   if spec.cors is None or not name.lower().startswith("access-control-")]
        return Response(answer.status, answer.body, None, headers)


def method_is_preflight(request: Request) -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def _secret(spec: HttpRouteSpec, name: str) -> bytes | None:
    """Read the route's secret once, at start; a route that cannot is an error at start, not a 500 later."""
    auth = spec.auth
    if auth is None:
        return None
    variable = auth.bearer_env or auth.hmac_env
    if variable is not None:
        value = os.environ.get(variable)
        if not value:
            raise RouteSecretError(f"route {name!r}: environment variable {variable} is not set")
        return value.encode()
    assert auth.bearer_file is not None
    try:
        value = auth.bearer_file.read_text().strip()
    except OSError as exc:
        raise RouteSecretError(f"route {name!r}: cannot read {auth.bearer_file}: {exc.strerror}") from None
    if not value:
        raise RouteSecretError(f"route {name!r}: {auth.bearer_file} is empty")
    return value.encode()


def _authorized(route: _Route, request: Request, body: bytes) -> bool:
    auth = route.spec.auth
    if auth is None:
        return True
    assert route.secret is not None
    if auth.hmac_env is not None:
        # GitHub-style: sha256=<hex HMAC-SHA256 of the raw body>
        given = request.headers.get(auth.header, "")
        expected = "sha256=" + hmac.new(route.secret, body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(given.encode(), expected.encode())
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), route.secret)


def _allowed_origin(cors: CorsSpec, request: Request) -> str | None:
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    if "*" in cors.allow_origins:
        return origin if cors.allow_credentials else "*"
    return origin if origin in cors.allow_origins else None


def _add_cors(response: Response, cors: CorsSpec, request: Request) -> None:
    origin = _allowed_origin(cors, request)
    if origin is None:
        return
    response.headers.append(("Access-Control-Allow-Origin", origin))
    if origin != "*":
        response.headers.append(("Vary", "Origin"))
    if cors.allow_credentials:
        response.headers.append(("Access-Control-Allow-Credentials", "true"))
    if cors.expose_headers:
        response.headers.append(("Access-Control-Expose-Headers", ", ".join(cors.expose_headers)))


def _preflight(cors: CorsSpec, request: Request) -> Response:
    response = Response(204)
    if _allowed_origin(cors, request) is None:
        return response
    response.headers.append(("Access-Control-Allow-Methods", ", ".join(cors.allow_methods)))
    response.headers.append(("Access-Control-Allow-Headers", ", ".join(cors.allow_headers)))
    if cors.max_age:
        response.headers.append(("Access-Control-Max-Age", str(int(cors.max_age))))
    return response
