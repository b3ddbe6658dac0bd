"""HTTP API payload v2.0 (lambda-semantics.md §10.4): event building, route templates and matching,
and the format-2.0 response rules. All pure; no server is started."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from eventd.httpevents import (
    HttpResponse,
    InvalidResponse,
    RouteTable,
    RouteTemplate,
    build_event,
    build_response,
    compile_template,
    route_key,
    select_route,
)

NOW_MS = 1583348638390  # 2020-03-04T19:03:58.390Z


def event(**over: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        route_key="$default", method="GET", raw_path="/my/path", raw_query="", headers=[], body=b"",
        path_parameters={}, source_ip="192.0.2.1", request_id="req-1", domain_name="abc.example.com",
        now_ms=NOW_MS,
    )
    args.update(over)
    return build_event(**args)


# ---- event building ----

def test_event_top_level_shape() -> None:
    ev = event(route_key="POST /orders/{id}", method="post", raw_path="/orders/7", path_parameters={"id": "7"},
               headers=[("User-Agent", "curl/8")])
    assert ev["version"] == "2.0" and ev["routeKey"] == "POST /orders/{id}"
    assert ev["rawPath"] == "/orders/7" and ev["pathParameters"] == {"id": "7"}
    ctx = ev["requestContext"]
    assert ctx["accountId"] == "000000000000" and ctx["apiId"] == "eventd"
    assert ctx["domainName"] == "abc.example.com" and ctx["domainPrefix"] == "abc"
    assert ctx["http"] == {"method": "POST", "path": "/orders/7", "protocol": "HTTP/1.1",
                           "sourceIp": "192.0.2.1", "userAgent": "curl/8"}
    assert ctx["requestId"] == "req-1" and ctx["routeKey"] == "POST /orders/{id}" and ctx["stage"] == "$default"


def test_event_time_formats() -> None:
    ctx = event()["requestContext"]
    assert ctx["time"] == "04/Mar/2020:19:03:58 +0000"
    assert ctx["timeEpoch"] == NOW_MS and "timeEpochMs" not in ctx


def test_event_time_single_digit_day_and_december() -> None:
    assert event(now_ms=1701475200000)["requestContext"]["time"] == "02/Dec/2023:00:00:00 +0000"


def test_headers_lower_cased_and_repeats_comma_joined() -> None:
    ev = event(headers=[("X-Thing", "a"), ("x-thing", "b"), ("Accept", "text/html")])
    assert ev["headers"] == {"x-thing": "a,b", "accept": "text/html"}


def test_cookies_split_and_removed_from_headers() -> None:
    ev = event(headers=[("Cookie", "a=1; b=2"), ("cookie", "c=3"), ("Host", "h")])
    assert ev["cookies"] == ["a=1", "b=2", "c=3"]
    assert ev["headers"] == {"host": "h"}


def test_no_cookies_key_without_cookie_header() -> None:
    assert "cookies" not in event(headers=[("Host", "h")])


def test_query_parameters_with_repeats_and_raw_preserved() -> None:
    raw = "parameter1=value1&parameter1=value2&parameter2=value"
    ev = event(raw_query=raw)
    assert ev["rawQueryString"] == raw
    assert ev["queryStringParameters"] == {"parameter1": "value1,value2", "parameter2": "value"}


def test_query_parameters_decoded_raw_left_encoded() -> None:
    ev = event(raw_query="scope=openid%20profile&q=a+b&flag")
    assert ev["rawQueryString"] == "scope=openid%20profile&q=a+b&flag"
    assert ev["queryStringParameters"] == {"scope": "openid profile", "q": "a b", "flag": ""}


def test_no_query_omits_parameters() -> None:
    ev = event()
    assert ev["rawQueryString"] == "" and "queryStringParameters" not in ev


def test_empty_path_parameters_omitted() -> None:
    assert "pathParameters" not in event()


def test_text_body_passed_as_text() -> None:
    ev = event(body=b'{"a": "\xc3\xa9"}', headers=[("Content-Type", "application/json; charset=utf-8")])
    assert ev["body"] == '{"a": "é"}' and ev["isBase64Encoded"] is False


@pytest.mark.parametrize("ctype", ["text/plain", "TEXT/CSV", "application/xml", "application/ld+json",
                                   "application/atom+xml", "application/x-www-form-urlencoded",
                                   "application/javascript"])
def test_textual_content_types(ctype: str) -> None:
    assert event(body=b"hi", headers=[("content-type", ctype)])["isBase64Encoded"] is False


@pytest.mark.parametrize("headers", [[("content-type", "image/png")], [("content-type", "application/octet-stream")], []])
def test_binary_body_base64(headers: list[tuple[str, str]]) -> None:
    ev = event(body=b"\x89PNG\x00", headers=headers)
    assert ev["isBase64Encoded"] is True and base64.b64decode(ev["body"]) == b"\x89PNG\x00"


def test_invalid_utf8_with_text_type_is_base64() -> None:
    ev = event(body=b"caf\xe9", headers=[("Content-Type", "text/plain")])
    assert ev["isBase64Encoded"] is True and base64.b64decode(ev["body"]) == b"caf\xe9"


def test_empty_body_omitted() -> None:
    ev = event(body=b"", headers=[("content-type", "application/octet-stream")])
    assert "body" not in ev and ev["isBase64Encoded"] is False


def test_event_serializes_to_json() -> None:
    assert orjson.loads(orjson.dumps(event(body=b"\x00"))) == event(body=b"\x00")


# ---- templates and matching ----

@pytest.mark.parametrize("template, path, expected", [
    ("/", "/", {}),
    ("/", "/x", None),
    ("/users", "/users", {}),
    ("/users", "/users/", {}),                       # one trailing slash is ignored
    ("/users", "/users/1", None),
    ("/users", "/Users", None),                      # literals are case-sensitive
    ("/users/{id}", "/users/42", {"id": "42"}),
    ("/users/{id}", "/users/42/", {"id": "42"}),
    ("/users/{id}", "/users", None),
    ("/users/{id}", "/users//", None),               # empty segment never fills {id}
    ("/users/{id}", "/users/42/x", None),
    ("/users/{id}", "/users/a%20b", {"id": "a b"}),
    ("/users/{id}", "/users/a%2Fb", {"id": "a/b"}),  # %2F stays inside its segment
    ("/us%65rs", "/users", None),                    # templates are literal text, not encoded
    ("/users", "/us%65rs", {}),                      # request segments are decoded before comparing
    ("/a/{x}/c/{y}", "/a/1/c/2", {"x": "1", "y": "2"}),
    ("/files/{proxy+}", "/files/a", {"proxy": "a"}),
    ("/files/{proxy+}", "/files/a/b/c.txt", {"proxy": "a/b/c.txt"}),
    ("/files/{proxy+}", "/files/a%20b/c", {"proxy": "a b/c"}),
    ("/files/{proxy+}", "/files", None),             # greedy needs at least one segment
    ("/files/{proxy+}", "/files/", None),
    ("/{proxy+}", "/anything/at/all", {"proxy": "anything/at/all"}),
    ("/{proxy+}", "/", None),
])
def test_match_table(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert compile_template(template).match(path) == expected


@pytest.mark.parametrize("template, fragment", [
    ("users", "must start with '/'"),
    ("/files/{proxy+}/x", "must be the last segment"),
    ("/a/{id}/b/{id}", "appears twice"),
    ("/a/{id}/{id+}", "appears twice"),
    ("/a/{bad-name}", "{name}"),
    ("/a/{}", "{name}"),
    ("/a/x{id}", "{name}"),
    ("/a//b", "empty segment"),
    ("/a/", "empty segment"),
])
def test_bad_templates(template: str, fragment: str) -> None:
    with pytest.raises(ValueError) as err:
        compile_template(template)
    assert fragment in str(err.value) and template in str(err.value)


def test_specificity_ordering() -> None:
    templates = ["/{proxy+}", "/pets/{proxy+}", "/pets/dog/{id}", "/pets/dog/1", "/pets/{kind}/1", "/{a}/dog/1"]
    ordered = sorted(templates, key=lambda t: compile_template(t).specificity)
    assert ordered == ["/pets/dog/1", "/pets/dog/{id}", "/pets/{kind}/1", "/{a}/dog/1", "/pets/{proxy+}", "/{proxy+}"]


def test_full_match_beats_greedy_even_with_shorter_literal_prefix() -> None:
    routes = [RouteTemplate(None, "/pets/{proxy+}"), RouteTemplate(None, "/{kind}/dog/1")]
    found = select_route(routes, "GET", "/pets/dog/1")
    assert found is not None and found[0].path == "/{kind}/dog/1" and found[1] == {"kind": "pets"}


def test_greedy_with_longer_literal_prefix_wins() -> None:
    routes = [RouteTemplate(None, "/{proxy+}"), RouteTemplate(None, "/a/b/{rest+}"), RouteTemplate(None, "/a/{p+}")]
    found = select_route(routes, "GET", "/a/b/c/d")
    assert found is not None and found[0].path == "/a/b/{rest+}" and found[1] == {"rest": "c/d"}


ROUTES = [
    RouteTemplate(frozenset({"GET"}), "/pets/dog/1"),
    RouteTemplate(frozenset({"GET"}), "/pets/dog/{id}"),
    RouteTemplate(frozenset({"GET"}), "/pets/{proxy+}"),
    RouteTemplate(None, "/{proxy+}"),
    RouteTemplate(None, "/orders/{id}"),
    RouteTemplate(frozenset({"POST"}), "/orders/{id}"),
]


@pytest.mark.parametrize("method, path, expected, params", [
    # the worked example from the API Gateway routing docs
    ("GET", "/pets/dog/1", "/pets/dog/1", {}),
    ("GET", "/pets/dog/2", "/pets/dog/{id}", {"id": "2"}),
    ("GET", "/pets/cat/1", "/pets/{proxy+}", {"proxy": "cat/1"}),
    ("POST", "/test/5", "/{proxy+}", {"proxy": "test/5"}),
    ("POST", "/pets/dog/1", "/{proxy+}", {"proxy": "pets/dog/1"}),
])
def test_select_route_docs_example(method: str, path: str, expected: str, params: dict[str, str]) -> None:
    found = select_route(ROUTES, method, path)
    assert found is not None and found[0].path == expected and found[1] == params


def test_select_route_explicit_method_beats_any() -> None:
    found = select_route(ROUTES, "post", "/orders/9")
    assert found is not None and found[0].method_set == frozenset({"POST"})
    found = select_route(ROUTES, "GET", "/orders/9")
    assert found is not None and found[0].method_set is None


def test_select_route_no_match() -> None:
    assert select_route(ROUTES[:3], "GET", "/cats") is None
    assert select_route(ROUTES[:3], "DELETE", "/pets/dog/1") is None


def test_route_key() -> None:
    assert route_key(RouteTemplate(frozenset({"POST", "PUT"}), "/orders/{id}"), "post") == "POST /orders/{id}"
    assert route_key(RouteTemplate(None, "/{proxy+}"), "GET") == "ANY /{proxy+}"


# ---- responses ----

def respond(result: Any) -> HttpResponse:
    return build_response(orjson.dumps(result))


def test_full_response() -> None:
    r = respond({"statusCode": 201, "headers": {"Content-Type": "text/plain", "X-N": 3, "X-B": True},
                 "body": "made", "isBase64Encoded": False})
    assert (r.status, r.body) == (201, b"made")
    assert r.headers == [("Content-Type", "text/plain"), ("X-N", "3"), ("X-B", "true")]


def test_default_content_type_is_json() -> None:
    r = respond({"statusCode": 200, "body": "body123"})
    assert r.headers == [("content-type", "application/json")] and r.body == b"body123"


def test_json_string_body_sent_as_is() -> None:
    assert respond({"statusCode": 200, "body": '{"hello": "world"}'}).body == b'{"hello": "world"}'


def test_status_without_body_is_empty() -> None:
    assert respond({"statusCode": 204}).body == b""
    assert respond({"statusCode": 204, "body": None, "headers": None, "cookies": None}).body == b""


def test_cookies_become_set_cookie_headers() -> None:
    r = respond({"statusCode": 200, "cookies": ["a=1; Max-Age=60", "b=2"], "headers": {"content-type": "text/html"}})
    assert r.headers == [("content-type", "text/html"), ("set-cookie", "a=1; Max-Age=60"), ("set-cookie", "b=2")]


def test_null_header_value_dropped() -> None:
    assert respond({"statusCode": 200, "headers": {"x-gone": None}}).headers == [("content-type", "application/json")]


def test_base64_body_decoded() -> None:
    data = bytes(range(256))
    r = respond({"statusCode": 200, "body": base64.b64encode(data).decode(), "isBase64Encoded": True,
                 "headers": {"content-type": "application/octet-stream"}})
    assert r.body == data


def test_multi_value_headers_ignored() -> None:
    r = respond({"statusCode": 200, "multiValueHeaders": {"x": ["1", "2"]}})
    assert all(name != "x" for name, _ in r.headers)


@pytest.mark.parametrize("result, body", [
    ({"hello": "world"}, b'{"hello":"world"}'),
    (["hello", 3, True], b'["hello",3,true]'),
    ("hello", b"hello"),                  # bare string: the 2025 recording (§10.4 CONFLICT)
    (3, b"3"),
    (3.1, b"3.1"),
    (True, b"true"),
    (None, b"null"),
    ({"body": "x", "headers": {}}, b'{"body":"x","headers":{}}'),  # no statusCode: the whole object is the body
])
def test_non_response_results(result: Any, body: bytes) -> None:
    r = respond(result)
    assert (r.status, r.headers, r.body) == (200, [("content-type", "application/json")], body)


@pytest.mark.parametrize("result", [
    {"statusCode": "200"},
    {"statusCode": 200.0},
    {"statusCode": True},
    {"statusCode": 99},
    {"statusCode": 600},
    {"statusCode": None},
    {"statusCode": 200, "headers": ["a", "b"]},
    {"statusCode": 200, "headers": "x: y"},
    {"statusCode": 200, "headers": {"x": {"nested": 1}}},
    {"statusCode": 200, "headers": {"x": "a\r\nset-cookie: evil=1"}},
    {"statusCode": 200, "body": {"a": 1}},
    {"statusCode": 200, "body": 5},
    {"statusCode": 200, "cookies": "a=1"},
    {"statusCode": 200, "cookies": [1]},
    {"statusCode": 200, "isBase64Encoded": "yes"},
    {"statusCode": 200, "body": "not base64!", "isBase64Encoded": True},
    {"statusCode": 200, "body": "abc", "isBase64Encoded": True},   # bad padding
])
def test_invalid_responses(result: Any) -> None:
    with pytest.raises(InvalidResponse):
        respond(result)


def test_non_json_result_is_invalid() -> None:
    with pytest.raises(InvalidResponse):
        build_response(b"not json")
    assert issubclass(InvalidResponse, ValueError)


def _template(methods: frozenset[str] | None, parts: list[str], greedy: bool) -> RouteTemplate:
    named = [f"{{v{i}}}" if part == "{}" else part for i, part in enumerate(parts)]  # valid: distinct names
    return RouteTemplate(methods, "/" + "/".join(named + ["{proxy+}"] * greedy))


_templates = st.builds(
    _template,
    st.one_of(st.none(), st.frozensets(st.sampled_from(["GET", "POST"]), min_size=1)),
    st.lists(st.sampled_from(["a", "b", "{}", "x"]), max_size=3),
    st.booleans(),
)


@example([RouteTemplate(None, "/a"), RouteTemplate(frozenset({"GET"}), "/a")], "GET", ["a"])
@example([RouteTemplate(None, "/{proxy+}"), RouteTemplate(None, "/a")], "GET", ["a"])
@given(st.lists(_templates, max_size=6), st.sampled_from(["GET", "POST", "PUT"]),
       st.lists(st.sampled_from(["a", "b", "x", "a%2Fb", ""]), max_size=3))
def test_the_route_table_selects_what_select_route_does(routes: list[RouteTemplate], method: str,
                                                        parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    assert RouteTable(routes).select(method, path) == select_route(routes, method, path)
