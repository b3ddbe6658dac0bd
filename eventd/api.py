"""The aiohttp application on `listen`: Lambda's Invoke API, function listing, health, metrics, status.

Errors follow Lambda's wire format (lambda-semantics.md §1.4): a status code, `x-amzn-ErrorType`
and a JSON body with `Type` and `message`/`Message`, which is what boto3 and the AWS CLI parse.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from typing import Any

import orjson
from aiohttp import web

from eventd.asyncq import MAX_ASYNC_PAYLOAD, AsyncInvocations
from eventd.dispatch import Throttled
from eventd.invoke import Invoker
from eventd.metrics import Metrics
from eventd.runtimes.pool import ACCOUNT, RUNTIME, function_arn

log = logging.getLogger(__name__)

#: Lambda's synchronous request payload limit, 6 MB (lambda-semantics.md §1.5).
MAX_SYNC_PAYLOAD = 6 * 1024 * 1024
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
_JSON = "application/json"

invoker_key = web.AppKey("invoker", Invoker)
metrics_key = web.AppKey("metrics", Metrics)
async_key = web.AppKey("async", AsyncInvocations)
ready_key = web.AppKey("ready", dict)
#: the push sources (HTTP routes, file watches, schedules), for status
sources_key: web.AppKey[Any] = web.AppKey("sources")


class ApiError(Exception):
    """An error answered in Lambda's format. `message_key` follows the casing of Lambda's model."""

    def __init__(
        self, status: int, code: str, message: str, *, message_key: str = "message",
        extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.message_key, self.extra, self.headers = message_key, extra or {}, headers or {}

    def response(self) -> web.Response:
        body = {"Type": "User" if self.status < 500 else "Service", self.message_key: self.message, **self.extra}
        return web.Response(
            status=self.status, body=orjson.dumps(body), content_type=_JSON,
            headers={"x-amzn-ErrorType": self.code, **self.headers},
        )


def not_found(name: str, qualifier: str | None = None) -> ApiError:
    return ApiError(404, "ResourceNotFoundException", f"Function not found: {function_arn(name, qualifier)}",
                    message_key="Message")


@web.middleware
async def lambda_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPRequestEntityTooLarge:
        return _too_large().response()
    except web.HTTPException as exc:
        if exc.status >= 400:
            codes = {404: "ResourceNotFoundException", 405: "MethodNotAllowedException"}
            code = codes.get(exc.status, "ServiceException")
            return ApiError(exc.status, code, exc.reason, message_key="Message").response()
        raise


def _too_large(limit: int = MAX_SYNC_PAYLOAD) -> ApiError:
    return ApiError(
        413, "RequestTooLargeException",
        f"Request must be smaller than {limit} bytes for the InvokeFunction operation",
    )


def parse_function_name(raw: str) -> tuple[str, str | None]:
    """Accept a name, `name:qualifier`, a partial ARN `acct:function:name[:q]` or a full ARN."""
    parts = raw.split(":")
    if len(parts) >= 7 and parts[0] == "arn" and parts[5] == "function":
        rest = parts[6:]
    elif len(parts) >= 3 and parts[1] == "function":
        rest = parts[2:]
    else:
        rest = parts
    if len(rest) > 2 or not rest[0]:
        raise ApiError(400, "InvalidParameterValueException", f"Invalid function name: {raw}")
    return rest[0], (rest[1] if len(rest) == 2 else None)


def _resolve(request: web.Request) -> tuple[str, str | None]:
    """The function a request names and the qualifier it was named with (only `$LATEST` exists until
    versions do)."""
    name, qualifier = parse_function_name(request.match_info["name"])
    query_qualifier = request.query.get("Qualifier")
    if qualifier and query_qualifier and qualifier != query_qualifier:
        raise ApiError(
            400, "InvalidParameterValueException",
            "The derived qualifier from the function name does not match the specified qualifier.",
        )
    qualifier = qualifier or query_qualifier
    invoker = request.app[invoker_key]
    if name not in invoker.config.functions or qualifier not in (None, "$LATEST"):
        raise not_found(name, qualifier)
    return name, qualifier


async def invoke(request: web.Request) -> web.Response:
    function, qualifier = _resolve(request)
    invocation_type = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
    if invocation_type not in INVOCATION_TYPES:
        raise ApiError(
            400, "InvalidParameterValueException",
            f"1 validation error detected: Value '{invocation_type}' at 'invocationType' failed to satisfy "
            "constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]",
        )
    limit = MAX_ASYNC_PAYLOAD if invocation_type == "Event" else MAX_SYNC_PAYLOAD
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    payload = await request.read()
    if len(payload) > limit:
        raise _too_large(limit)
    _check_json(payload)
    if invocation_type == "DryRun":
        return web.Response(status=204)
    if invocation_type == "Event":
        return await _invoke_async(request, function, payload)
    client_context = _client_context(request.headers.get("X-Amz-Client-Context"))
    invoker = request.app[invoker_key]
    try:
        result = await invoker.invoke_sync(
            function, payload, client_context=client_context, trace_id=request.headers.get("X-Amzn-Trace-Id"),
            invoked_arn=function_arn(function, qualifier),
        )
    except Throttled as exc:
        raise ApiError(429, "TooManyRequestsException", str(exc), extra={"Reason": exc.reason},
                       headers={"Retry-After": "1"}) from None
    headers = {"X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": result.request_id}
    if result.error_type is not None:
        headers["X-Amz-Function-Error"] = "Unhandled"
    if request.headers.get("X-Amz-Log-Type") == "Tail":
        headers["X-Amz-Log-Result"] = result.log_tail_base64()
    return web.Response(body=result.payload, headers=headers, content_type=_JSON)


async def _invoke_async(request: web.Request, function: str, payload: bytes) -> web.Response:
    try:
        request_id = await request.app[async_key].accept(function, payload)
    except Exception as exc:  # the event is not committed: say so, and the client retries
        log.error("Could not commit an async event for %s: %s.", function, exc)
        raise ApiError(500, "ServiceException", "The event could not be stored; retry.",
                       message_key="Message") from None
    # 202 only now: the event is committed
    return web.Response(status=202, headers={"x-amzn-RequestId": request_id})


def _check_json(payload: bytes) -> None:
    if not payload:
        return
    try:
        orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        try:  # orjson refuses integers beyond 64 bits, which JSON (and Lambda) allow
            json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(
                400, "InvalidRequestContentException",
                f"Could not parse request body into json: Could not parse payload into json: {exc}",
            ) from None


def _client_context(header: str | None) -> dict[str, Any] | None:
    if not header:
        return None
    try:
        value = json.loads(base64.b64decode(header, validate=True))
    except (binascii.Error, ValueError):
        value = None
    if not isinstance(value, dict):
        raise ApiError(400, "InvalidRequestContentException",
                       "Client context must be a valid Base64-encoded JSON object.")
    return value


def function_configuration(invoker: Invoker, name: str) -> dict[str, Any]:
    spec = invoker.spec(name)
    config: dict[str, Any] = {
        "FunctionName": name,
        "FunctionArn": function_arn(name),
        "Runtime": RUNTIME,
        "Role": f"arn:aws:iam::{ACCOUNT}:role/eventd",
        "Handler": spec.handler,
        "CodeSize": 0,
        "Description": spec.description,
        "Timeout": max(1, round(spec.timeout)),
        "MemorySize": spec.memory_mb,
        "LastModified": invoker.loaded_at.strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
        "CodeSha256": "",
        "Version": "$LATEST",
        "TracingConfig": {"Mode": "PassThrough"},
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": ["x86_64"],
        "EphemeralStorage": {"Size": 512},
    }
    if spec.environment:
        config["Environment"] = {"Variables": dict(spec.environment)}
    return config


async def list_functions(request: web.Request) -> web.Response:
    invoker = request.app[invoker_key]
    names = sorted(invoker.config.functions)
    marker = request.query.get("Marker")
    start = names.index(marker) if marker in names else 0
    try:
        max_items = int(request.query.get("MaxItems", "50"))
    except ValueError:
        raise ApiError(400, "InvalidParameterValueException", "MaxItems must be a whole number") from None
    page = names[start : start + max(1, min(max_items, 10_000))]
    body: dict[str, Any] = {"Functions": [function_configuration(invoker, n) for n in page]}
    if start + len(page) < len(names):
        body["NextMarker"] = names[start + len(page)]
    return web.Response(body=orjson.dumps(body), content_type=_JSON)


async def get_function(request: web.Request) -> web.Response:
    invoker = request.app[invoker_key]
    name, _ = _resolve(request)
    spec = invoker.spec(name)
    body: dict[str, Any] = {
        "Configuration": function_configuration(invoker, name),
        "Code": {"RepositoryType": "Local", "Location": str(spec.code or "")},
    }
    if spec.concurrency is not None:
        body["Concurrency"] = {"ReservedConcurrentExecutions": spec.concurrency}
    return web.Response(body=orjson.dumps(body), content_type=_JSON)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ready = request.app[ready_key]
    invoker = request.app[invoker_key]
    not_warm = sorted(name for name, pool in invoker.pools.items() if not pool.warm_ready)
    problems = []
    if not ready.get("listening"):
        problems.append("not listening yet")
    elif not ready.get("running"):
        problems.append("starting: sources, mappings and async runners are not all up yet")
    if ready.get("draining"):
        problems.append("draining")
    if not_warm:
        problems.append(f"warm processes not up for: {', '.join(not_warm)}")
    status = 503 if problems else 200
    return web.json_response({"status": "ready" if not problems else "not ready", "problems": problems},
                             status=status)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[metrics_key].exposition()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def build_app(invoker: Invoker, metrics_: Metrics, async_: AsyncInvocations) -> web.Application:
    from eventd import admin

    # a little above the payload limit so an oversized body reaches our handler and gets Lambda's 413
    app = web.Application(middlewares=[lambda_errors], client_max_size=MAX_SYNC_PAYLOAD + 1)
    app[invoker_key] = invoker
    app[metrics_key] = metrics_
    app[async_key] = async_
    app[ready_key] = {"started": time.monotonic()}
    app.router.add_post("/2015-03-31/functions/{name}/invocations", invoke)
    app.router.add_get("/2015-03-31/functions/", list_functions)
    app.router.add_get("/2015-03-31/functions", list_functions)
    app.router.add_get("/2015-03-31/functions/{name}", get_function)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    admin.add_routes(app)
    return app


def add_producer_api(app: web.Application, queues: Any, streams: Any, mappings: Any, metrics_: Metrics) -> None:
    """The queue and stream producer endpoints, beside the Invoke API on the same listener."""
    from eventd import producers

    app[producers.queues_key] = queues
    app[producers.streams_key] = streams
    app[producers.mappings_key] = mappings
    app[producers.metrics_key] = metrics_
    producers.add_routes(app)
