"""A small HTTP client for the CLI commands that talk to a running daemon (stdlib only, synchronous)."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

DEFAULT_URL = "http://127.0.0.1:9271"


class DaemonUnreachable(Exception):
    pass


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


def call(
    base_url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
    timeout: float = 960.0,
) -> Reply:
    """Send one request; any HTTP status is a Reply, only an unreachable daemon raises."""
    request = urllib.request.Request(base_url.rstrip("/") + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        # HTTPException: the peer closed or garbled the response (a daemon killed mid-reply)
        reason = getattr(exc, "reason", exc)
        raise DaemonUnreachable(f"cannot reach eventd at {base_url}: {reason}") from None
