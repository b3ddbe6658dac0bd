"""The embedded example function: `eventd run` with no config serves it as `hello`."""

from __future__ import annotations

from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    print(f"Saying hello to {name}.")
    return {"message": f"Hello, {name}!", "request_id": context.aws_request_id}
