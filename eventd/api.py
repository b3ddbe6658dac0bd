"""The API on `listen`: Lambda's Invoke API, function listing, health, metrics, status.

Errors follow Lambda's wire format (lambda-semantics.md §1.4): a status code, `x-amzn-ErrorType`
and a JSON body with `Type` and `message`/`Message`, which is what boto3 and the AWS CLI parse.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from eventd.asyncq import MAX_ASYNC_PAYLOAD, AsyncInvocations
from eventd.dispatch import Throttled
from eventd.httpserver import Handler, Request, Response, RouteError, Router, json_response
from eventd.invoke import Invoker
from eventd.metrics import Metrics
from eventd.runtimes.pool import ACCOUNT, RUNTIME, function_arn

log = logging.getLogger(__name__)

#: Lambda's synchronous request payload limit, 6 MB (lambda-semantics.md §1.5).
MAX_SYNC_PAYLOAD = 6 * 1024 * 1024
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
_JSON = "application/json"



@dataclass
class ApiState:
    """What the API's handlers read, as `request.app`."""

    invoker: Invoker
    metrics: Metrics
    asyncq: AsyncInvocations
    #: listening / running / draining flags and the start time, for /readyz and status
    ready: dict[str, Any] = field(default_factory=lambda: {"started": time.monotonic()})
    #: the push sources (HTTP routes, file watches, schedules), for status
    sources: Any = None
    queues: Any = None
    streams: Any = None
    mappings: Any = None


class ApiError(Exception):
    """An error answered in Lambda's format. `message_key` follows the casing of Lambda's model."""

    def __init__(
        self, status: int, code: str, message: str, *, message_key: str = "message",
        extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.message_key, self.extra, self.headers = message_key, extra or {}, headers or {}

    def response(self) -> Response:
        body = {"Type": "User" if self.status < 500 else "Service", self.message_key: self.message, **self.extra}
        return Response(self.status, orjson.dumps(body), _JSON,
                        [("x-amzn-ErrorType", self.code), *self.headers.items()])


def not_found(name: str, qualifier: str | None = None) -> ApiError:
    return ApiError(404, "ResourceNotFoundException", f"Function not found: {function_arn(name, qualifier)}",
                    message_key="Message")


def queue_not_found(name: str) -> ApiError:
    return ApiError(404, "QueueDoesNotExist", f"Queue not found: {name}", message_key="Message")


_ERROR_CODES = {400: "InvalidRequestContentException", 404: "ResourceNotFoundException",
                405: "MethodNotAllowedException", 431: "InvalidRequestContentException"}


def error_page(status: int, message: str) -> Response:
    """What the server itself answers (unparseable request, body over the cap, a handler that raised),
    in Lambda's format."""
    if status == 413:
        return _too_large().response()
    return ApiError(status, _ERROR_CODES.get(status, "ServiceException"), message, message_key="Message").response()


class Api:
    """The listener's handler: routes a request and answers every error in Lambda's format."""

    def __init__(self, state: ApiState) -> None:
        self.state = state
        self.router = Router()

    def add(self, method: str, template: str, handler: Handler) -> None:
        self.router.add(method, template, handler)

    async def handle(self, request: Request) -> Response:
        try:
            return await self.router.resolve(request)(request)
        except ApiError as exc:
            return exc.response()
        except RouteError as exc:
            response = error_page(exc.status, exc.reason)
            response.headers.extend(exc.headers)
            return response


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


def _resolve(request: Request) -> tuple[str, str | None]:
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
    invoker = request.app.invoker
    if name not in invoker.config.functions or qualifier not in (None, "$LATEST"):
        raise not_found(name, qualifier)
    return name, qualifier


async def invoke(request: Request) -> Response:
    function, qualifier = _resolve(request)
    invocation_type = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
    if invocation_type not in INVOCATION_TYPES:
        raise ApiError(
            400, "InvalidParameterValueException",
            f"1 validation error detected: Value '{invocation_type}' at 'invocationType' failed to satisfy "
            "constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]",
        )
    limit = MAX_ASYNC_PAYLOAD if invocation_type == "Event" else MAX_SYNC_PAYLOAD
    payload = request.body
    if len(payload) > limit:
        raise _too_large(limit)
    _check_json(payload)
    if invocation_type == "DryRun":
        return Response(204)
    if invocation_type == "Event":
        return await _invoke_async(request, function, payload)
    client_context = _client_context(request.headers.get("X-Amz-Client-Context"))
    invoker = request.app.invoker
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
    return Response(200, result.payload, _JSON, list(headers.items()))


async def _invoke_async(request: Request, function: str, payload: bytes) -> Response:
    try:
        request_id = await request.app.asyncq.accept(function, payload)
    except Exception as exc:  # the event is not committed: say so, and the client retries
        log.error("Could not commit an async event for %s: %s.", function, exc)
        raise ApiError(500, "ServiceException", "The event could not be stored; retry.",
                       message_key="Message") from None
    # 202 only now: the event is committed
    return Response(202, headers=[("x-amzn-RequestId", request_id)])


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


async def list_functions(request: Request) -> Response:
    invoker = request.app.invoker
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
    return json_response(body)


async def get_function(request: Request) -> Response:
    invoker = request.app.invoker
    name, _ = _resolve(request)
    spec = invoker.spec(name)
    body: dict[str, Any] = {
        "Configuration": function_configuration(invoker, name),
        "Code": {"RepositoryType": "Local", "Location": str(spec.code or "")},
    }
    if spec.concurrency is not None:
        body["Concurrency"] = {"ReservedConcurrentExecutions": spec.concurrency}
    return json_response(body)


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    ready = request.app.ready
    invoker = request.app.invoker
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
    return json_response({"status": "ready" if not problems else "not ready", "problems": problems}, status)


async def metrics(request: Request) -> Response:
    return Response(200, request.app.metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8")


def build_api(state: ApiState) -> Api:
    """Every endpoint on `listen`: the Invoke API, health, metrics, admin and the producers."""
    from eventd import admin, producers

    api = Api(state)
    api.add("POST", "/2015-03-31/functions/{name}/invocations", invoke)
    api.add("GET", "/2015-03-31/functions/", list_functions)
    api.add("GET", "/2015-03-31/functions", list_functions)
    api.add("GET", "/2015-03-31/functions/{name}", get_function)
    api.add("GET", "/healthz", healthz)
    api.add("GET", "/readyz", readyz)
    api.add("GET", "/metrics", metrics)
    admin.add_routes(api)
    producers.add_routes(api)
    return api
