from __future__ import annotations

from tests.harness import Daemon


def test_hello_round_trip(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = daemon_factory(
        {"hello": {"handler": "hello.handler", "warm": 1}},
        {"hello.py": "def handler(event, context):\n    return {'hi': event.get('name')}\n"},
    ).start()
    reply = daemon.invoke("hello", {"name": "Ann"})
    assert reply.status == 200
    assert reply.json() == {"hi": "Ann"}
    assert daemon.stop() == 0
