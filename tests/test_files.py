"""File watches through a real daemon and real files: S3 event shape, complete files only, renames,
deletes, moves, filters, polling mode, and changes made while eventd was stopped."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Daemon, read_jsonl, wait_until

RECORDER = '''
import json, os

def handler(event, context):
    with open(os.environ["FILE_EVENTS"], "a") as out:
        for record in event["Records"]:
            out.write(json.dumps(record) + "\\n")
'''


class Events:
    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path)

    def object_keys(self, name: str | None = None) -> list[str]:
        return [r["s3"]["object"]["key"] for r in self.all() if name is None or r["eventName"] == name]

    def wait_key(self, key: str, timeout: float = 15) -> dict[str, Any]:
        return wait_until(lambda: next((r for r in self.all() if r["s3"]["object"]["key"] == key), None),
                          timeout, what=f"an event for {key}")


@pytest.fixture
def events(tmp_path: Path) -> Events:
    return Events(tmp_path / "events.jsonl")


def watch(daemon_factory, tmp_path: Path, recorded: Events, **files: Any) -> tuple[Daemon, Path]:  # type: ignore[no-untyped-def]
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    daemon = daemon_factory(
        {"rec": {"handler": "rec.handler", "environment": {"FILE_EVENTS": str(recorded.path)}}},
        {"rec.py": RECORDER},
        routes=[{"files": {"path": str(inbox), "settle": "300ms", **files}, "function": "rec", "name": "uploads"}],
    )
    return daemon, inbox


def test_a_written_file_fires_once_in_s3_shape(daemon_factory, tmp_path: Path, events: Events) -> None:  # type: ignore[no-untyped-def]
    daemon, inbox = watch(daemon_factory, tmp_path, events)
    daemon.start()
    (inbox / "sub").mkdir()
    content = b"a,b\n1,2\n"
    (inbox / "sub" / "my report.csv").write_bytes(content)
    record = events.wait_key("sub/my+report.csv")
    assert record["eventSource"] == "aws:s3" and record["eventVersion"] == "2.1"
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["bucket"] == {"name": "uploads", "ownerIdentity": {"principalId": "eventd"},
                                      "arn": "arn:aws:s3:::uploads"}
    assert record["s3"]["object"]["size"] == len(content)
    assert record["s3"]["object"]["eTag"] == hashlib.md5(content).hexdigest()
    assert len(record["s3"]["object"]["sequencer"]) == 20
    assert record["eventTime"].endswith("Z")
    # a barrier: a later file fired, so anything the first one would still fire has fired
    (inbox / "barrier").write_text("x")
    events.wait_key("barrier")
    assert events.object_keys().count("sub/my+report.csv") == 1


def test_a_file_being_written_fires_only_once_complete(daemon_factory, tmp_path: Path, events: Events) -> None:  # type: ignore[no-untyped-def]
    daemon, inbox = watch(daemon_factory, tmp_path, events, settle="30s")
    daemon.start()
    with open(inbox / "big.bin", "wb") as slow:
        slow.write(b"first part")
        slow.flush()
        # while it is open, another file comes and goes: once it fired, the open one had its chance
        (inbox / "barrier").write_text("x")
        events.wait_key("barrier")
        assert "big.bin" not in events.object_keys()
        slow.write(b" and the rest")
    record = events.wait_key("big.bin")  # closing it completes it: no 30 s settle wait
    assert record["s3"]["object"]["size"] == len(b"first part and the rest")
    (inbox / "barrier2").write_text("x")
    events.wait_key("barrier2")
    assert events.object_keys().count("big.bin") == 1


def test_rename_into_the_folder_fires_once(daemon_factory, tmp_path: Path, events: Events) -> None:  # type: ignore[no-untyped-def]
    daemon, inbox = watch(daemon_factory, tmp_path, events)
    daemon.start()
    staging = tmp_path / "staging.tmp"
    staging.write_text("ready")
    os.rename(staging, inbox / "done.txt")
    events.wait_key("done.txt")
    (inbox / "barrier").write_text("x")
    events.wait_key("barrier")
    assert events.object_keys().count("done.txt") == 1


def test_deletes_and_moves(daemon_factory, tmp_path: Path, events: Events) -> None:  # type: ignore[no-untyped-def]
    daemon, inbox = watch(daemon_factory, tmp_path, events, events=["created", "deleted", "moved"])
    daemon.start()
    (inbox / "a.txt").write_text("a")
    events.wait_key("a.txt")
    os.rename(inbox / "a.txt", inbox / "b.txt")
    moved = events.wait_key("b.txt")
    assert moved["eventName"] == "ObjectCreated:Copy"
    wait_until(lambda: "a.txt" in events.object_keys("ObjectRemoved:Delete"), what="the old name's removal")
    os.remove(inbox / "b.txt")
    wait_until(lambda: "b.txt" in events.object_keys("ObjectRemoved:Delete"), what="the delete")
    removed = [r for r in events.all() if r["eventName"] == "ObjectRemoved:Delete"][-1]
    assert "size" not in removed["s3"]["object"] and "eTag" not in removed["s3"]["object"]


def test_filters_and_polling_mode(daemon_factory, tmp_path: Path, events: Events) -> None:  # type: ignore[no-untyped-def]
    daemon, inbox = watch(daemon_factory, tmp_path, events, mode="poll", poll_interval="100ms",
                          prefix="in/", suffix=".csv", recursive=True)
    daemon.start()
    (inbox / "in").mkdir()
    (inbox / "in" / "skip.txt").write_text("no")
    (inbox / "out.csv").write_text("no")
    (inbox / "in" / "take.csv").write_text("yes")
    events.wait_key("in/take.csv")
    (inbox / "in" / "barrier.csv").write_text("x")
    events.wait_key("in/barrier.csv")
    assert sorted(events.object_keys()) == ["in/barrier.csv", "in/take.csv"]
    assert daemon.status()["watches"][0]["mode"] == "poll"


def test_changes_while_stopped_fire_after_restart_once(daemon_factory, tmp_path: Path, events: Events) -> None:  # type: ignore[no-untyped-def]
    daemon, inbox = watch(daemon_factory, tmp_path, events, events=["created", "modified", "deleted"])
    (inbox / "old.txt").write_text("old")
    (inbox / "keep.txt").write_text("keep")
    (inbox / "gone.txt").write_text("gone")
    daemon.start()
    for key in ("old.txt", "keep.txt", "gone.txt"):  # present at the first start: new to the index
        events.wait_key(key)
    assert daemon.stop() == 0
    (inbox / "new.txt").write_text("new")
    (inbox / "old.txt").write_text("changed")
    os.utime(inbox / "old.txt", ns=(1, 1))  # a different mtime, whatever the clock's resolution
    os.remove(inbox / "gone.txt")
    daemon.start()
    events.wait_key("new.txt")
    wait_until(lambda: events.object_keys().count("old.txt") == 2, what="the changed file")
    wait_until(lambda: "gone.txt" in events.object_keys("ObjectRemoved:Delete"), what="the removal")
    assert daemon.stop() == 0
    before = len(events.all())
    daemon.start()
    (inbox / "barrier").write_text("x")
    events.wait_key("barrier")
    assert len(events.all()) == before + 1  # nothing fired twice for a file it had already seen
