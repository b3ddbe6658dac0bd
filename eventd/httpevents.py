"""HTTP API payload v2.0 (API Gateway HTTP API / Function URL): route templates, the request event,
and the response rules (lambda-semantics.md §10.4). Pure functions, no I/O.

Choices where AWS is silent or sources conflict:
- Routing: a template is "/" or "/"-separated segments, each a literal, `{name}` (one non-empty
  segment) or a final `{name+}` (one or more segments). Request paths are split on "/" *before*
  percent-decoding, so `%2F` stays inside its segment; literals compare against the decoded segment.
  One trailing "/" on the request is ignored (`/users/42/` matches `/users/{id}`); empty inner
  segments never match a `{name}`. Order: sort by `specificity` ascending, most specific first:
  every non-greedy template before every greedy one (AWS's documented priority), then segment by
  segment literal < {param} < {proxy+}.
  `select_route` then prefers an explicit method over ANY for equally specific paths.
- Event: the request's Cookie headers go to `cookies` (split on ";", trimmed) and are dropped from
  `headers`; `cookies`, `queryStringParameters` and `pathParameters` are omitted when empty, as AWS
  does. Query values are decoded form-style ("+" is a space, as API Gateway does); `rawQueryString`
  is passed through untouched. A body is text only for a textual Content-Type *and* valid UTF-8,
  otherwise base64 (no Content-Type means binary). `domainPrefix` is the first label of the host.
- Response: a JSON *string* result is sent bare (`"hello"` -> `hello`), following the 2025 AWS
  recording over the 2023 doc table (the §10.4 CONFLICT, §14 item 9). A `body` of null counts as no
  body. Header values must be scalars (str/number/bool; null drops the header); CR/LF in a header
  or cookie is rejected so a function cannot inject headers.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson

ACCOUNT_ID = "000000000000"  # §10.4: HTTP API events carry an account id; eventd has no real account
API_ID = "eventd"

_LITERAL, _PARAM, _GREEDY = 0, 1, 2  # lower rank = more specific (API Gateway's priority)
_VARIABLE = re.compile(r"\{([A-Za-z0-9_]+)(\+?)\}")
# %b is locale-dependent; API Gateway always writes English month abbreviations
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_TEXT_TYPES = frozenset(
    {"application/json", "application/xml", "application/x-www-form-urlencoded", "application/javascript"}
)


class InvalidResponse(ValueError):
    """The function's result is not a valid HTTP response; the caller answers 502."""


@dataclass(frozen=True)
class RouteTemplate:
    method_set: frozenset[str] | None  # None = any method
    path: str  # "/users/{id}", "/files/{proxy+}", "/"


@dataclass(frozen=True)
class CompiledPath:
    template: str
    segments: tuple[tuple[int, str], ...]  # (kind, literal text or variable name)
    specificity: tuple[int, ...] = field(compare=False)  # sort ascending: most specific first

    def match(self, path: str) -> dict[str, str] | None:
        """Path parameters (percent-decoded) when `path` (raw, still encoded) fits, else None."""
        if not path.startswith("/"):
            return None
        if path.endswith("/") and path != "/":
            path = path[:-1]
        parts = path[1:].split("/") if path != "/" else []
        params: dict[str, str] = {}
        for i, (kind, text) in enumerate(self.segments):
            if kind == _GREEDY:
                rest = parts[i:]
                if not rest or not rest[0]:
                    return None
                params[text] = "/".join(unquote(p) for p in rest)
                return params
            if i >= len(parts):
                return None
            segment = unquote(parts[i])
            if kind == _LITERAL:
                if segment != text:
                    return None
            elif not segment:
                return None
            else:
                params[text] = segment
        return params if len(parts) == len(self.segments) else None


@lru_cache(maxsize=1024)  # routes are few and matched per request; compile each template once
def compile_template(path: str) -> CompiledPath:
    if not path.startswith("/"):
        raise ValueError(f"route path {path!r} must start with '/'")
    raw = path[1:].split("/") if path != "/" else []
    segments: list[tuple[int, str]] = []
    seen: set[str] = set()
    for i, seg in enumerate(raw):
        if not seg:
            raise ValueError(f"route path {path!r} has an empty segment (doubled or trailing '/')")
        if "{" not in seg and "}" not in seg:
            segments.append((_LITERAL, seg))
            continue
        m = _VARIABLE.fullmatch(seg)
        if m is None:
            raise ValueError(
                f"route path {path!r}: segment {seg!r} must be a whole {{name}} or {{name+}} with name of A-Z a-z 0-9 _"
            )
        name, greedy = m.group(1), bool(m.group(2))
        if greedy and i != len(raw) - 1:
            raise ValueError(f"route path {path!r}: greedy {{{name}+}} must be the last segment")
        if name in seen:
            raise ValueError(f"route path {path!r}: path variable {name!r} appears twice")
        seen.add(name)
        segments.append((_GREEDY if greedy else _PARAM, name))
    # API Gateway ranks any full (non-greedy) match above every greedy one; within each group the
    # per-segment ranks compare left to right, so longer literal prefixes come first.
    kinds = tuple(kind for kind, _ in segments)
    return CompiledPath(path, tuple(segments), (int(_GREEDY in kinds), *kinds))


def select_route(
    routes: Sequence[RouteTemplate], method: str, path: str
) -> tuple[RouteTemplate, dict[str, str]] | None:
    """The most specific route for `method` and `path` with its path parameters, or None ($default)."""
    best: tuple[tuple[tuple[int, ...], int], RouteTemplate, dict[str, str]] | None = None
    for route in routes:
        if route.method_set is not None and method.upper() not in route.method_set:
            continue
        compiled = compile_template(route.path)
        params = compiled.match(path)
        if params is None:
            continue
        key = (compiled.specificity, 0 if route.method_set is not None else 1)
        if best is None or key < best[0]:
            best = (key, route, params)
    return None if best is None else (best[1], best[2])


class RouteTable:
    """`select_route` with a dict in front: a path that equals a literal template (no parameters) is
    found without trying every template. Such a match is always the most specific one, and a named
    method ranks above ANY, so the dict answers exactly what select_route would."""

    def __init__(self, routes: Sequence[RouteTemplate]) -> None:
        self.routes = list(routes)
        self._literal: dict[tuple[str | None, str], RouteTemplate] = {}
        for route in self.routes:
            if "{" not in route.path:
                for method in route.method_set or (None,):
                    self._literal.setdefault((method, route.path), route)

    def select(self, method: str, path: str) -> tuple[RouteTemplate, dict[str, str]] | None:
        if "%" not in path:  # templates match decoded segments: leave encoded paths to select_route
            hit = self._literal.get((method.upper(), path)) or self._literal.get((None, path))
            if hit is not None:
                return hit, {}
        return select_route(self.routes, method, path)


def route_key(route: RouteTemplate, method: str) -> str:
    return f"{method.upper() if route.method_set is not None else 'ANY'} {route.path}"


def _is_text(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    if media.startswith("text/") or media in _TEXT_TYPES:
        return True
    return media.startswith("application/") and media.endswith(("+json", "+xml"))


@functools.lru_cache(maxsize=4)
def _clf_second(second: int) -> str:
    t = datetime.fromtimestamp(second, tz=UTC)
    return f"{t.day:02d}/{_MONTHS[t.month - 1]}/{t.year}:{t:%H:%M:%S} +0000"


def _clf_time(now_ms: int) -> str:
    # every request in the same second shares the formatted string (it is on the hot path)
    return _clf_second(now_ms // 1000)


def build_event(
    *,
    route_key: str,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    path_parameters: dict[str, str],
    source_ip: str,
    request_id: str,
    stage: str = "$default",
    domain_name: str,
    now_ms: int,
) -> dict[str, Any]:
    joined: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
        else:
            joined[key] = f"{joined[key]},{value}" if key in joined else value
    query: dict[str, str] = {}
    for k, v in parse_qsl(raw_query, keep_blank_values=True) if raw_query else ():
        query[k] = f"{query[k]},{v}" if k in query else v
    event: dict[str, Any] = {"version": "2.0", "routeKey": route_key, "rawPath": raw_path, "rawQueryString": raw_query}
    if cookies:
        event["cookies"] = cookies
    event["headers"] = joined
    if query:
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    event["requestContext"] = {
        "accountId": ACCOUNT_ID,
        "apiId": API_ID,
        "domainName": domain_name,
        "domainPrefix": domain_name.split(".", 1)[0].split(":", 1)[0],
        "http": {
            "method": method.upper(),
            "path": raw_path,
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
            "userAgent": joined.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": route_key,
        "stage": stage,
        "time": _clf_time(now_ms),
        "timeEpoch": now_ms,
    }
    encoded = False
    if body:
        text: str | None = None
        if _is_text(joined.get("content-type")):
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = None  # mislabelled binary: base64 keeps the bytes intact
        encoded = text is None
        event["body"] = base64.b64encode(body).decode("ascii") if encoded else text
    event["isBase64Encoded"] = encoded
    return event


@dataclass(slots=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]  # multi-valued allowed (set-cookie)
    body: bytes


def _header_text(value: Any, what: str) -> str:
    if type(value) is str and "\r" not in value and "\n" not in value:  # the usual case, checked first
        return value
    if isinstance(value, bool):
        text = "true" if value else "false"  # JSON spelling, not Python's True/False
    elif isinstance(value, str):
        text = value
    elif isinstance(value, (int, float)):
        text = orjson.dumps(value).decode()
    else:
        raise InvalidResponse(f"{what} must be a string, number or boolean, got {type(value).__name__}")
    if "\r" in text or "\n" in text:
        raise InvalidResponse(f"{what} contains a line break")
    return text


def build_response(result_json: bytes) -> HttpResponse:
    try:
        result = orjson.loads(result_json)
    except orjson.JSONDecodeError as exc:
        raise InvalidResponse(f"function result is not JSON: {exc}") from None
    json_type = [("content-type", "application/json")]
    if not (isinstance(result, dict) and "statusCode" in result):
        # Any other JSON is the body itself, re-serialized compactly; a string goes out bare (see docstring).
        body = result.encode() if isinstance(result, str) else orjson.dumps(result)
        return HttpResponse(200, json_type, body)
    status = result["statusCode"]
    if type(status) is not int or not 100 <= status <= 599:  # not bool either: type(True) is bool
        raise InvalidResponse(f"statusCode must be an integer 100-599, got {status!r}")
    raw_headers = result.get("headers")
    raw_headers = {} if raw_headers is None else raw_headers
    if not isinstance(raw_headers, dict):
        raise InvalidResponse("headers must be an object")
    headers = [
        (_header_text(name, "header name"), _header_text(value, f"header {name!r}"))
        for name, value in raw_headers.items()
        if value is not None
    ]
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers += json_type
    cookies = result.get("cookies")
    cookies = [] if cookies is None else cookies
    if not isinstance(cookies, list) or not all(isinstance(c, str) for c in cookies):
        raise InvalidResponse("cookies must be a list of strings")
    headers += [("set-cookie", _header_text(c, "cookie")) for c in cookies]
    raw_body = result.get("body")
    if raw_body is not None and not isinstance(raw_body, str):
        raise InvalidResponse(f"body must be a string, got {type(raw_body).__name__}")
    b64 = result.get("isBase64Encoded")
    b64 = False if b64 is None else b64
    if not isinstance(b64, bool):
        raise InvalidResponse("isBase64Encoded must be a boolean")
    body_text = raw_body or ""
    if not b64:
        return HttpResponse(status, headers, body_text.encode())
    try:
        return HttpResponse(status, headers, base64.b64decode(body_text, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise InvalidResponse(f"body is not valid base64: {exc}") from None
