"""The admin API on the loopback listener: daemon status and operator tools for queues (DLQs)."""

from __future__ import annotations

import time

import orjson

from eventd import __version__
from eventd.api import Api, ApiError, queue_not_found
from eventd.config import mapping_name, route_source
from eventd.dlq import describe, redrive
from eventd.httpserver import Request, Response, json_response
from eventd.runtimes.pool import REGION


async def status(request: Request) -> Response:
    invoker = request.app.invoker
    ready = request.app.ready
    functions = []
    for name, pool in invoker.pools.items():
        spec = pool.spec
        functions.append(
            {
                "name": name,
                "handler": spec.handler,
                "processes": pool.counts(),
                "concurrency_in_use": invoker.dispatcher.in_use(name),
                "concurrency_limit": invoker.dispatcher.limit(name),
                "reserved": spec.concurrency,
                "warm": spec.warm,
                "last_init_error": pool.last_init_error,
            }
        )
    config = invoker.config
    mappings = [
        {"name": mapping_name(route, index), "source": route_source(route), "function": route.function,
         "enabled": route.enabled}
        for index, route in enumerate(config.routes)
    ]
    sources = request.app.sources
    pushed = sources.status() if sources is not None else {"watches": [], "schedules": []}
    for schedule in pushed["schedules"]:
        nxt = schedule["next_fire"]
        schedule["next_fire"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(nxt)) if nxt else None
    return json_response(
        {
            **pushed,
            "mappings": mappings,
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - ready.get("started", time.monotonic()), 3),
            "max_concurrency": invoker.dispatcher.max_concurrency,
            "concurrency_in_use": invoker.dispatcher.total_in_use,
            "region": REGION,
            "functions": functions,
        }
    )


def _queue(request: Request) -> str:
    name = request.match_info["queue"]
    if name not in request.app.invoker.config.queues:
        raise queue_not_found(name)
    return name


def _limit(request: Request, default: int) -> int:
    raw = request.query.get("limit", str(default))
    if not raw.isdigit() or int(raw) < 1:
        raise ApiError(400, "InvalidParameterValueException", f"limit must be a whole number above 0, found {raw!r}")
    return int(raw)


async def list_messages(request: Request) -> Response:
    queue = _queue(request)
    queues = request.app.asyncq.queues
    messages = await queues.peek(queue, _limit(request, 50))
    stats = (await queues.stats(queue)).get(queue)
    return json_response({"queue": queue, "depth": stats.depth if stats else 0,
                  "messages": [describe(m, full=False) for m in messages]})


async def show_message(request: Request) -> Response:
    queue = _queue(request)
    message = await request.app.asyncq.queues.get(queue, request.match_info["id"])
    if message is None:
        raise ApiError(404, "MessageNotFound", f"No message {request.match_info['id']} in {queue}",
                       message_key="Message")
    return json_response(describe(message, full=True))


async def redrive_messages(request: Request) -> Response:
    queue = _queue(request)
    try:
        options = orjson.loads(request.body or b"{}")
    except orjson.JSONDecodeError:
        raise ApiError(400, "InvalidRequestContentException", "expected a JSON body") from None
    if not isinstance(options, dict):
        raise ApiError(400, "InvalidRequestContentException", 'expected a JSON object like {"to": "fn", "limit": 10}')
    functions = set(request.app.invoker.config.functions)
    to = options.get("to")
    if to is not None and to not in functions:
        raise ApiError(404, "ResourceNotFoundException", f"Function not found: {to}", message_key="Message")
    limit = options.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ApiError(400, "InvalidParameterValueException", "limit must be a whole number above 0")
    asyncq = request.app.asyncq
    report = await redrive(asyncq.queues, queue, functions, to, limit)
    for function in report.to:
        asyncq.wake(function)
    return json_response({"queue": queue, "redriven": report.redriven, "to": report.to, "skipped": report.skipped})


async def purge(request: Request) -> Response:
    queue = _queue(request)
    purged = await request.app.asyncq.queues.purge(queue)
    return json_response({"queue": queue, "purged": purged})


def add_routes(api: Api) -> None:
    api.add("GET", "/admin/status", status)
    api.add("GET", "/admin/queues/{queue}/messages", list_messages)
    api.add("GET", "/admin/queues/{queue}/messages/{id}", show_message)
    api.add("POST", "/admin/queues/{queue}/redrive", redrive_messages)
    api.add("DELETE", "/admin/queues/{queue}/messages", purge)
