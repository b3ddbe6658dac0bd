"""The example function of config/eventd.yaml."""

from __future__ import annotations

import os
from typing import Any

# Init runs once per process: put clients, models and other slow set-up here.
GREETING = os.environ.get("GREETING", "Hello")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    print(f"{GREETING} to {name} from {context.function_name}.")
    return {"message": f"{GREETING}, {name}!", "request_id": context.aws_request_id}
