"""The stored form of an async event: which queue holds a function's events, and their bookkeeping."""

from __future__ import annotations

from typing import Any

from eventd.ids import message_ids
from eventd.store.queues import NewMessage

ASYNC_PREFIX = "async:"


def async_queue(function: str) -> str:
    """The durable queue of `function`'s async events."""
    return f"{ASYNC_PREFIX}{function}"


def new_event(payload: bytes, function: str, request_id: str | None = None, **extra: Any) -> NewMessage:
    """An async event as stored: the payload as body; request id and attempt counts as meta.

    The request id is the message id too, so an operator can find an event by the id the caller got.
    """
    request_id = request_id or message_ids.next()
    meta = {"rid": request_id, "fn": function, "attempts": 0, "throttles": 0, "invokes": 0, **extra}
    return NewMessage(payload, meta=meta, id=request_id)
