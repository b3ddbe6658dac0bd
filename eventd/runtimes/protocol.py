"""Messages between the daemon and a handler process: msgpack maps over a Unix stream socket.

msgpack is self-delimiting, so frames need no length prefix: each side feeds bytes to an Unpacker.
Imported by the bootstrap too, so it uses nothing but the standard library and msgpack.

daemon -> process   {"t": "invoke", "id", "payload": bytes, "deadline_ms", "arn", "client_context", "trace_id"}
                    {"t": "stop"}
process -> daemon   {"t": "ready", "init_ms"}            init finished, waiting for work
                    {"t": "init_error", "error", "init_ms"} init failed; the process exits next
                    {"t": "log", "d": str}                  handler output (whole lines)
                    {"t": "result", "payload": bytes, "rss_kb"}
                    {"t": "error", "error": {...}, "rss_kb", "fatal": bool}
"""

from __future__ import annotations

#: Environment variable naming the inherited socket's file descriptor in the handler process.
IPC_FD_ENV = "EVENTD_IPC_FD"
#: Environment variable with the memory limit, MB, that the bootstrap applies to itself.
MEMORY_ENV = "EVENTD_MEMORY_MB"
#: Lambda's response cap: 6 MiB + 100 bytes (lambda-semantics.md §1.3).
MAX_RESPONSE_BYTES = 6 * 1024 * 1024 + 100
