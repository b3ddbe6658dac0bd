"""Logging: the daemon's own records and every function's output, written from threads, never the loop.

Function output (START/END/REPORT lines and whatever handlers print) goes to the daemon's stderr
(journald under systemd) and to `state_dir/logs/<function>.log`, each line tagged with its request id.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

_STOP = object()
#: How long the writer thread lets output gather before writing it.
_GATHER_S = 0.01


def _timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class _Formatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class DaemonLogging:
    """Root logging through a queue to a listener thread, plus the function-output writer thread."""

    def __init__(self, level: str, log_dir: Path | None, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._stderr = logging.StreamHandler(self._stream)
        self._stderr.setFormatter(_Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._listener = logging.handlers.QueueListener(records, self._stderr)
        self._queue_handler = logging.handlers.QueueHandler(records)
        self._level = getattr(logging, level.upper())
        self._log_dir = log_dir
        self._output: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._files: dict[str, TextIO] = {}
        self._writer = threading.Thread(target=self._write_output, name="eventd-function-logs", daemon=True)

    def __enter__(self) -> DaemonLogging:
        root = logging.getLogger()
        root.handlers[:] = [self._queue_handler]
        root.setLevel(self._level)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
        self._listener.start()
        self._writer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._output.put(_STOP)
        self._writer.join(timeout=5)
        self._listener.stop()
        logging.getLogger().handlers[:] = [logging.StreamHandler(self._stream)]
        for file in self._files.values():
            file.close()

    def function_output(self, function: str, request_id: str | None, text: str) -> None:
        """Queue handler output (possibly several lines) for `function`, tagged with `request_id`."""
        self._output.put((function, request_id, "", [text], ""))

    def invocation(self, function: str, request_id: str, start: str, output: list[str], closing: str) -> None:
        """Queue one invocation's whole log: START, the handler's output (tagged), END and REPORT.
        One queue entry per invocation keeps the hot path to a single cheap put."""
        self._output.put((function, request_id, start, output, closing))

    def _write_output(self) -> None:
        while True:
            item = self._output.get()
            # let a few milliseconds of output gather: one wake-up and one write serve many invocations
            time.sleep(_GATHER_S)
            batch = [item]
            # drain what else is queued so one lock and one flush serve many lines
            while len(batch) < 4096:
                try:
                    batch.append(self._output.get_nowait())
                except queue.Empty:
                    break
            stop = any(entry is _STOP for entry in batch)
            self._write_batch([entry for entry in batch if entry is not _STOP])  # type: ignore[misc]
            if stop:
                return

    def _write_batch(self, batch: list[tuple[str, str | None, str, list[str], str]]) -> None:
        stamp = _timestamp()
        # every entry is (function, request id, untagged head, output tagged with the id, untagged tail);
        # regroup them per function, in order
        pieces: dict[str, list[tuple[str | None, str]]] = {}
        for function, request_id, head, output, tail in batch:
            mine = pieces.setdefault(function, [])
            if head:
                mine.append((None, head))
            if output:
                mine.append((request_id, "".join(output)))
            if tail:
                mine.append((None, tail))
        to_stderr: list[str] = []
        per_file: dict[str, list[str]] = {}
        echo = self._level <= logging.INFO  # function output reaches stderr at info and below only
        for function, texts in pieces.items():
            lines_of_file = per_file.setdefault(function, [])
            for request_id, text in texts:
                for line in text.splitlines() or [""]:
                    tagged = f"{request_id}\t{line}" if request_id else line
                    lines_of_file.append(f"{stamp} {tagged}\n")
                    if echo:
                        to_stderr.append(f"{stamp} fn/{function} {tagged}\n")
        if echo:
            self._stderr.acquire()
            try:
                self._stream.write("".join(to_stderr))
                self._stream.flush()
            except (OSError, ValueError):
                pass
            finally:
                self._stderr.release()
        if self._log_dir is None:
            return
        for function, lines in per_file.items():
            try:
                file = self._files.get(function)
                if file is None:
                    file = self._files[function] = open(  # noqa: SIM115 - kept open for the daemon's life
                        self._log_dir / f"{function}.log", "a", encoding="utf-8"
                    )
                file.write("".join(lines))
                file.flush()
            except OSError as exc:
                logging.getLogger(__name__).warning("Cannot write the log of function %s: %s.", function, exc)
