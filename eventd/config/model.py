"""Typed model of eventd.yaml. Field names here are the YAML keys users write; keep them stable."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from eventd.retry import FUNCTION_ERROR_BACKOFF, THROTTLE_BACKOFF, Backoff
from eventd.units import DURATION_HINT, format_duration, parse_duration

#: The Lambda limits eventd copies (lambda-semantics.md §8.4).
MIN_MEMORY_MB = 128
MAX_MEMORY_MB = 10_240
MAX_TIMEOUT_S = 900.0
DEFAULT_LISTEN = "127.0.0.1:9271"

#: Variables Lambda sets itself; a function's `environment` may not override them (§8.3).
RESERVED_ENV = frozenset(
    {
        "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
    }
)

_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HANDLER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_QUEUE_NAME = re.compile(r"^(?=.{1,80}$)[A-Za-z0-9_-]+(\.fifo)?$")
_ENV_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]+$")


def _duration(value: object) -> float:
    return parse_duration(value)


#: Seconds, written in the YAML as `500ms`, `30s`, `5m`, `1h` (or a bare number of seconds).
Duration = Annotated[
    float,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d)$"},
                {"type": "number", "minimum": 0},
            ],
            "description": f"{DURATION_HINT} (a bare number means seconds)",
        }
    ),
]


def _within(message: str, low: float | None = None, high: float | None = None,
            above: float | None = None) -> AfterValidator:
    """A range check for a Duration field, declared on the field: the one way ranges are written."""

    def check(value: float) -> float:
        if (low is not None and value < low) or (high is not None and value > high) or (
                above is not None and value <= above):
            raise ValueError(message)
        return value

    return AfterValidator(check)


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError("expected a string (environment values are text)")


EnvValue = Annotated[str, BeforeValidator(_env_value)]


def _env_key(key: str) -> str:
    if not _ENV_KEY.match(key):
        raise ValueError("expected a variable name of 2+ letters, digits or _, starting with a letter")
    if key in RESERVED_ENV:
        raise ValueError("this variable is reserved: eventd sets it for every function")
    return key


def _function_name(name: str) -> str:
    if not _FUNCTION_NAME.match(name):
        raise ValueError("expected a function name of 1-64 letters, digits, '-' or '_'")
    return name


def _queue_name(name: str) -> str:
    if not _QUEUE_NAME.match(name):
        raise ValueError("expected a queue name of 1-80 letters, digits, '-' or '_' (FIFO queues may end in .fifo)")
    return name


EnvKey = Annotated[str, AfterValidator(_env_key)]
QueueName = Annotated[str, AfterValidator(_queue_name)]
FunctionName = Annotated[str, AfterValidator(_function_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class BackoffSpec(_Strict):
    """Exponential backoff: wait `initial`, then `initial * multiplier`, ... up to `max`, each spread by
    +/- `jitter` (a fraction) so that many retries do not land together."""

    initial: Duration = Field(description="wait before the first retry")
    max: Duration = Field(description="longest wait between two attempts")
    multiplier: float = Field(default=2.0, ge=1.0, le=10.0)
    jitter: float = Field(default=0.1, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_bounds(self) -> BackoffSpec:
        if self.initial < 0.001:
            raise ValueError("expected an initial wait of at least 1ms (0 would retry in a tight loop)")
        if self.max < self.initial:
            raise ValueError(f"expected max ({self.max:g}s) to be at least initial ({self.initial:g}s)")
        return self

    @classmethod
    def of(cls, policy: Backoff) -> BackoffSpec:
        return cls(initial=policy.initial, max=policy.maximum, multiplier=policy.multiplier, jitter=policy.jitter)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds before retry number `attempt` (see eventd.retry.Backoff)."""
        return Backoff(self.initial, max(self.max, self.initial), self.multiplier, self.jitter).delay(attempt, rng)


class WebhookSpec(_Strict):
    url: str = Field(description="http(s) URL that receives the invocation record as a JSON POST")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")
    timeout: Duration = Field(default=10.0, description="how long one delivery attempt may take")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("expected an http:// or https:// URL")
        return value


class DestinationSpec(_Strict):
    """Where an invocation record goes: exactly one of `function`, `queue` or `webhook`."""

    function: str | None = Field(default=None, description="invoke this function asynchronously with the record")
    queue: str | None = Field(default=None, description="send the record to this queue")
    webhook: WebhookSpec | None = Field(default=None, description="POST the record to this URL")

    @model_validator(mode="after")
    def _exactly_one(self) -> DestinationSpec:
        if sum(x is not None for x in (self.function, self.queue, self.webhook)) != 1:
            raise ValueError("expected exactly one of function, queue or webhook")
        return self

    @property
    def kind(self) -> str:
        return "function" if self.function else "queue" if self.queue else "webhook"


class AsyncSpec(_Strict):
    """How asynchronous invocations of a function are retried and where their results go (Lambda's
    FunctionEventInvokeConfig and DeadLetterConfig)."""

    max_retries: int = Field(default=2, ge=0, le=100, description="retries after function errors (Lambda: 0-2)")
    max_event_age: Annotated[Duration, _within("expected a max_event_age from 60s to 6h, as Lambda allows",
                                               60.0, 21600.0)] = Field(
        default=21600.0, description="events older than this are not run (60s-6h)")
    retry_backoff: BackoffSpec = Field(
        default_factory=lambda: BackoffSpec.of(FUNCTION_ERROR_BACKOFF),
        description="waits between attempts after function errors (Lambda: 1 minute, then 2)",
    )
    throttle_backoff: BackoffSpec = Field(
        default_factory=lambda: BackoffSpec.of(THROTTLE_BACKOFF),
        description="waits between attempts that were throttled (Lambda: 1 second growing to 5 minutes)",
    )
    on_success: DestinationSpec | None = None
    on_failure: DestinationSpec | None = None
    dead_letter: str | None = Field(default=None, description="queue that receives failed events, unchanged")



class QueueSpec(_Strict):
    """An embedded durable queue (SQS semantics)."""

    visibility_timeout: Annotated[Duration, _within("expected a visibility_timeout of at most 12h, as SQS allows",
                                                    high=43200.0)] = Field(
        default=30.0, description="how long a received message stays hidden before it can be received again"
    )
    retention: Annotated[Duration, _within("expected a retention from 1m to 14d, as SQS allows",
                                           60.0, 1209600.0)] = Field(
        default=345600.0, description="messages older than this are deleted (SQS: 1m-14d)")
    delay: Annotated[Duration, _within("expected a delay of at most 15m, as SQS allows", high=900.0)] = Field(
        default=0.0, description="every message becomes visible this long after it is sent")
    max_message_size: int = Field(default=1024 * 1024, ge=1, le=1024 * 1024, description="largest body, bytes")
    dead_letter: str | None = Field(default=None, description="queue that receives messages received too often")
    max_receive_count: int = Field(
        default=10, ge=1, le=1000, description="receives after which a message moves to `dead_letter`"
    )
    fifo: bool = Field(default=False, description="order messages per message group; deduplicate by id")
    content_based_deduplication: bool = Field(
        default=False, description="FIFO: a message without a deduplication id is deduplicated by its body's SHA-256"
    )
    deduplication_window: Duration = Field(default=300.0, description="FIFO: how long a deduplication id is kept")





class StreamSpec(_Strict):
    """An embedded durable stream (Kinesis semantics): records ordered per shard, kept for `retention`."""

    shards: int = Field(default=1, ge=1, le=256, description="records are spread over shards by partition key")
    retention: Annotated[Duration, _within("expected a retention from 1h to 365d", 3600.0, 365 * 86400.0)] = Field(
        default=86400.0, description="records older than this are trimmed (Kinesis: 24h-365d)")



Pattern = dict[str, Any] | str


class _MappingBase(_Strict):
    function: str = Field(description="the function invoked with each batch")
    name: str | None = Field(
        default=None, description="names the mapping in metrics and status (default: source->function)"
    )
    batching_window: Annotated[Duration, _within("expected a batching_window of at most 300s, as Lambda allows",
                                                 high=300.0)] = Field(
        default=0.0, description="wait this long for a fuller batch (0-300s)")
    max_batch_bytes: int = Field(default=6 * 1024 * 1024, ge=1, le=6 * 1024 * 1024,
                                 description="a batch is flushed before its records reach this many bytes")
    filters: list[Pattern] = Field(default_factory=list, max_length=10,
                                   description="Lambda filter patterns; a record passes if any matches")
    report_batch_item_failures: bool = Field(default=False, description="honour `batchItemFailures` responses")
    enabled: bool = True


    @field_validator("filters")
    @classmethod
    def _check_filters(cls, value: list[Pattern]) -> list[Pattern]:
        from eventd.patterns import compile_filters

        compile_filters(value)  # raises PatternError (a ValueError) with the path of the bad part
        return value


class QueueRouteSpec(_MappingBase):
    """An event source mapping from a queue: batches of messages in Lambda's SQS event shape."""

    queue: str = Field(description="the queue read")
    kind: ClassVar[str] = "queue"
    batch_size: int = Field(default=10, ge=1, le=10000)
    max_concurrency: int | None = Field(default=None, ge=1, le=1000,
                                        description="most batches of this mapping running at once")


class StreamRouteSpec(_MappingBase):
    """An event source mapping from a stream: ordered batches per shard in Lambda's Kinesis event shape."""

    stream: str = Field(description="the stream read")
    kind: ClassVar[str] = "stream"
    batch_size: int = Field(default=100, ge=1, le=10000)
    starting_position: str = Field(default="latest", pattern="^(trim_horizon|latest|at_timestamp)$")
    starting_position_timestamp: float | None = Field(default=None, ge=0, description="Unix seconds, for at_timestamp")
    parallelization_factor: int = Field(default=1, ge=1, le=10,
                                        description="batches per shard at once; order is kept per partition key")
    bisect_batch_on_function_error: bool = False
    max_retry_attempts: int = Field(default=-1, ge=-1, le=10000, description="-1: retry until the records expire")
    max_record_age: Annotated[Duration, _within("expected a max_record_age from 60s to 7d, as Lambda allows",
                                                60.0, 604800.0)] | None = Field(
        default=None, description="records older than this are not retried (60s-7d; unset: until they expire)")
    on_failure: DestinationSpec | None = Field(default=None, description="receives a record pointing at a "
                                                                          "discarded batch")


    @model_validator(mode="after")
    def _check_timestamp(self) -> StreamRouteSpec:
        if self.starting_position == "at_timestamp" and self.starting_position_timestamp is None:
            raise ValueError("starting_position at_timestamp needs starting_position_timestamp")
        return self


class HttpSourceSpec(_Strict):
    method: str | list[str] = Field(default="ANY", description="GET, POST, ... a list, or ANY")
    path: str = Field(description="path template: /users/{id}, greedy /files/{proxy+}")

    @field_validator("method")
    @classmethod
    def _check_method(cls, value: str | list[str]) -> str | list[str]:
        methods = [value] if isinstance(value, str) else value
        for method in methods:
            if method.upper() not in _HTTP_METHODS:
                raise ValueError(f"expected an HTTP method ({', '.join(sorted(_HTTP_METHODS))})")
        return value

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        from eventd.httpevents import compile_template

        if not value.startswith("/"):
            raise ValueError("expected a path starting with /")
        compile_template(value)  # raises ValueError naming what is wrong
        return value

    def methods(self) -> frozenset[str] | None:
        """The accepted methods, or None for any."""
        methods = {self.method} if isinstance(self.method, str) else set(self.method)
        upper = frozenset(m.upper() for m in methods)
        return None if "ANY" in upper else upper


_HTTP_METHODS = frozenset({"ANY", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class AuthSpec(_Strict):
    """How callers of an HTTP route prove who they are. Secrets come from the environment or a file,
    never from the YAML itself."""

    bearer_env: str | None = Field(default=None, description="environment variable holding the bearer token")
    bearer_file: Path | None = Field(default=None, description="file holding the bearer token")
    hmac_env: str | None = Field(default=None, description="environment variable holding the HMAC-SHA256 key")
    header: str = Field(default="X-Hub-Signature-256", description="header carrying `sha256=<hex digest>`")

    @model_validator(mode="after")
    def _exactly_one(self) -> AuthSpec:
        if sum(x is not None for x in (self.bearer_env, self.bearer_file, self.hmac_env)) != 1:
            raise ValueError("expected exactly one of bearer_env, bearer_file or hmac_env")
        return self


class CorsSpec(_Strict):
    allow_origins: list[str] = Field(default_factory=lambda: ["*"])
    allow_methods: list[str] = Field(default_factory=lambda: ["*"])
    allow_headers: list[str] = Field(default_factory=lambda: ["*"])
    expose_headers: list[str] = Field(default_factory=list)
    max_age: Duration = Field(default=0.0)
    allow_credentials: bool = False


class HttpRouteSpec(_Strict):
    """An HTTP route on the public listener: requests become API Gateway HTTP API (v2.0) events."""

    http: HttpSourceSpec
    function: str
    name: str | None = None
    invocation: str = Field(default="sync", pattern="^(sync|async)$",
                            description="sync answers with the function's result; async answers 202")
    auth: AuthSpec | None = None
    cors: CorsSpec | None = None
    max_body: int = Field(default=6 * 1024 * 1024, ge=0, le=6 * 1024 * 1024, description="largest body, bytes")
    enabled: bool = True
    kind: ClassVar[str] = "http"


class FilesSourceSpec(_Strict):
    path: Path = Field(description="the folder watched (relative to the config file)")
    recursive: bool = True
    events: list[str] = Field(default_factory=lambda: ["created", "modified"],
                              description="created, modified, deleted, moved")
    prefix: str = Field(default="", description="only keys (paths relative to the folder) starting with this")
    suffix: str = Field(default="", description="only keys ending with this")
    glob: str | None = Field(default=None, description="only keys matching this glob (fnmatch)")
    settle: Duration = Field(default=1.0, description="a file not closed after writing fires once it is "
                                                      "unchanged this long")
    mode: str = Field(default="auto", pattern="^(auto|inotify|poll)$",
                      description="inotify, poll (for NFS and some container mounts), or auto")
    poll_interval: Annotated[Duration, _within("expected a poll_interval of at least 10ms", low=0.01)] = Field(
        default=1.0, description="how often poll mode scans (10ms or more)")


    @field_validator("events")
    @classmethod
    def _check_events(cls, value: list[str]) -> list[str]:
        for kind in value:
            if kind not in ("created", "modified", "deleted", "moved"):
                raise ValueError(f"expected created, modified, deleted or moved (not {kind!r})")
        if not value:
            raise ValueError("expected at least one event kind")
        return value


class FilesRouteSpec(_Strict):
    """A folder watched for files: each change becomes an S3-style notification, invoked asynchronously."""

    files: FilesSourceSpec
    function: str
    name: str | None = Field(default=None, description="the bucket name in events (default: the folder's name)")
    enabled: bool = True
    kind: ClassVar[str] = "files"


class ScheduleRouteSpec(_Strict):
    """A schedule: each fire becomes an EventBridge Scheduled Event, invoked asynchronously."""

    schedule: str = Field(description="cron(m h dom mon dow year), a five-field cron, or rate(N unit)")
    function: str
    name: str | None = Field(default=None, description="the rule name in events (default: schedule-<n>)")
    timezone: str = Field(default="UTC", description="IANA time zone the cron fields are read in")
    catch_up: str = Field(default="latest", pattern="^(none|latest|all)$",
                          description="what runs for fires missed while eventd was down")
    max_catch_up: int = Field(default=10, ge=1, le=10000, description="with catch_up all: most missed fires run")
    overlap: str = Field(default="allow", pattern="^(allow|skip|queue)$",
                         description="when the previous fire's run is still going: run anyway, skip, or wait")
    enabled: bool = True
    kind: ClassVar[str] = "schedule"

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, value: str) -> str:
        from eventd.schedules import parse_schedule

        parse_schedule(value)  # raises ScheduleError (a ValueError) naming the bad field
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("expected an IANA time zone like Europe/Berlin") from None
        return value


def _route_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        for kind in ("queue", "stream", "http", "files", "schedule"):
            if kind in value:
                return kind
        return None
    return getattr(value, "kind", None)


RouteSpec = Annotated[
    Annotated[QueueRouteSpec, Tag("queue")]
    | Annotated[StreamRouteSpec, Tag("stream")]
    | Annotated[HttpRouteSpec, Tag("http")]
    | Annotated[FilesRouteSpec, Tag("files")]
    | Annotated[ScheduleRouteSpec, Tag("schedule")],
    Discriminator(
        _route_kind,
        custom_error_type="route_source",
        custom_error_message="expected a route with one source: queue, stream, http, files or schedule",
    ),
]


class HttpListenerSpec(_Strict):
    listen: str = Field(default="0.0.0.0:8080", description="host:port of the public listener for HTTP routes")

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen(value)
        return value


class FunctionSpec(_Strict):
    """One function: its handler code and how its processes run."""

    handler: str = Field(description="`module.function` (dots for packages), imported from `code`")
    code: Path | None = Field(
        default=None, description="folder put first on the import path; relative to the config file"
    )
    timeout: Annotated[Duration, _within("expected a timeout above 0 and at most 15m", high=MAX_TIMEOUT_S,
                                         above=0.0)] = Field(
        default=3.0, description="longest one invocation may run (Lambda: 1s-900s)")
    memory_mb: int = Field(
        default=128, ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB, description="memory limit of each process, MB"
    )
    environment: dict[EnvKey, EnvValue] = Field(default_factory=dict, description="extra environment variables")
    concurrency: int | None = Field(
        default=None,
        ge=0,
        description="reserved concurrency: this many simultaneous invocations, at most and at least",
    )
    warm: int = Field(default=0, ge=0, description="processes kept started and initialised")
    idle_timeout: Duration = Field(default=300.0, description="a process above `warm` is stopped after this idle")
    description: str = Field(default="", max_length=256)
    async_: AsyncSpec = Field(default_factory=AsyncSpec, alias="async",
                              description="retries, max event age and destinations of async invocations")

    @field_validator("handler")
    @classmethod
    def _check_handler(cls, value: str) -> str:
        if len(value) > 128 or not _HANDLER.match(value):
            raise ValueError("expected `module.function` (like `hello.handler` or `pkg.mod.handler`)")
        return value





class Config(_Strict):
    """The whole eventd.yaml."""

    listen: str = Field(
        default=DEFAULT_LISTEN, description="host:port of the Invoke, admin and metrics API (keep it loopback)"
    )
    state_dir: Path = Field(default=Path("state"), description="logs and durable state; relative to the config")
    max_concurrency: int = Field(default=64, ge=1, description="global cap on simultaneous invocations")
    drain_timeout: Duration = Field(
        default=30.0, description="on SIGTERM, how long in-flight invocations may take to finish"
    )
    log_level: str = Field(default="info", pattern="^(debug|info|warning|error)$")
    durability: str = Field(
        default="normal", pattern="^(normal|full)$",
        description="normal: a process crash loses nothing; full: also a power cut (fsync every commit)",
    )
    functions: dict[FunctionName, FunctionSpec] = Field(default_factory=dict)
    queues: dict[QueueName, QueueSpec] = Field(default_factory=dict)
    streams: dict[QueueName, StreamSpec] = Field(default_factory=dict)
    routes: list[RouteSpec] = Field(default_factory=list, description="what connects each source to a function")
    http: HttpListenerSpec = Field(default_factory=HttpListenerSpec, description="the public HTTP listener")

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen(value)
        return value



    def unreserved_concurrency(self) -> int:
        """What functions without `concurrency` share, as Lambda's unreserved pool."""
        return self.max_concurrency - sum(f.concurrency or 0 for f in self.functions.values())


def parse_listen(value: str) -> tuple[str, int]:
    """Split `host:port` (IPv6 as `[::1]:9271`). Raises ValueError on a bad address."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected host:port, like 127.0.0.1:9271")
    return host.strip("[]"), int(port)


def json_schema() -> dict[str, Any]:
    """The config's JSON Schema, for editors that autocomplete eventd.yaml."""
    schema = Config.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "eventd.yaml"
    return schema
