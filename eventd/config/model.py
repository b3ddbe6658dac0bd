"""Typed model of eventd.yaml. Field names here are the YAML keys users write; keep them stable."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
)

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


EnvKey = Annotated[str, AfterValidator(_env_key)]
FunctionName = Annotated[str, AfterValidator(_function_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FunctionSpec(_Strict):
    """One function: its handler code and how its processes run."""

    handler: str = Field(description="`module.function` (dots for packages), imported from `code`")
    code: Path | None = Field(
        default=None, description="folder put first on the import path; relative to the config file"
    )
    timeout: Duration = Field(default=3.0, description="longest one invocation may run (Lambda: 1s-900s)")
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

    @field_validator("handler")
    @classmethod
    def _check_handler(cls, value: str) -> str:
        if len(value) > 128 or not _HANDLER.match(value):
            raise ValueError("expected `module.function` (like `hello.handler` or `pkg.mod.handler`)")
        return value

    @field_validator("timeout")
    @classmethod
    def _check_timeout(cls, value: float) -> float:
        if not 0 < value <= MAX_TIMEOUT_S:
            raise ValueError("expected a timeout above 0 and at most 15m")
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
    functions: dict[FunctionName, FunctionSpec] = Field(default_factory=dict)

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
