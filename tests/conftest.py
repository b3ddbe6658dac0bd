from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Daemon, make_daemon


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Build (not start) daemons in the test's temp dir; every one still running is stopped afterwards."""
    made: list[Daemon] = []

    def factory(functions: dict[str, dict[str, Any]], code: dict[str, str], *, name: str = "d",
                **top: Any) -> Daemon:
        daemon = make_daemon(tmp_path / name, functions, code, **top)
        made.append(daemon)
        return daemon

    yield factory
    for daemon in made:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()
