"""Load and validate eventd.yaml. `load(path)` is the only entry point other modules use.

Every problem in a file is reported at once, one line each: `file:line: key.path: expected ..., found ...`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from eventd.config.loader import LoadedYaml, dotted, load_yaml
from eventd.config.model import (
    Config,
    DestinationSpec,
    FilesRouteSpec,
    FunctionSpec,
    HttpRouteSpec,
    QueueRouteSpec,
    ScheduleRouteSpec,
    StreamRouteSpec,
    json_schema,
)
from eventd.errors import ConfigError, ConfigProblem

ROUTE_MODELS: dict[str, Any] = {
    "queue": QueueRouteSpec, "stream": StreamRouteSpec, "http": HttpRouteSpec, "files": FilesRouteSpec,
    "schedule": ScheduleRouteSpec,
}

__all__ = ["Config", "ConfigError", "FunctionSpec", "json_schema", "load", "load_text"]


def load(path: str | Path) -> Config:
    """Read, validate and resolve the config at `path`. Raises ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), None, "", f"cannot read the file: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigProblem(str(path), None, "", "the file is not UTF-8 text")]) from None
    return load_text(text, file=str(path), base_dir=path.resolve().parent)


def load_text(text: str, *, file: str, base_dir: Path) -> Config:
    """Validate YAML `text` as if read from `file`; relative paths resolve against `base_dir`."""
    loaded = load_yaml(text, file)
    problems = list(loaded.problems)
    if problems and loaded.data is None:
        raise ConfigError(problems)
    data = {} if loaded.data is None else loaded.data
    if not isinstance(data, dict):
        # the line of the value itself: comments and blank lines may come before it
        raise ConfigError(
            [ConfigProblem(file, loaded.line_of(()), "", "expected a mapping of keys at the top of the file")]
        )
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems.extend(_translate(error, loaded, file) for error in exc.errors())
        problems.extend(_check_valid_functions(data, loaded, file, base_dir))
        raise ConfigError(_sorted(problems)) from None
    config = _resolve_paths(config, base_dir)
    problems.extend(_cross_check(config, loaded, file))
    if problems:
        raise ConfigError(_sorted(problems))
    return config


def _sorted(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    return sorted(problems, key=lambda p: (p.line or 0, p.path))


def _resolve_paths(config: Config, base_dir: Path) -> Config:
    functions = {name: _resolve_code(spec, base_dir) for name, spec in config.functions.items()}
    routes = [_resolve_route(route, base_dir) for route in config.routes]
    return config.model_copy(update={"state_dir": (base_dir / config.state_dir).resolve(), "functions": functions,
                                     "routes": routes})


def _resolve_route(route: Any, base_dir: Path) -> Any:
    if isinstance(route, FilesRouteSpec):
        files = route.files.model_copy(update={"path": (base_dir / route.files.path).resolve()})
        return route.model_copy(update={"files": files})
    if isinstance(route, HttpRouteSpec) and route.auth is not None and route.auth.bearer_file is not None:
        auth = route.auth.model_copy(update={"bearer_file": (base_dir / route.auth.bearer_file).resolve()})
        return route.model_copy(update={"auth": auth})
    return route


def _resolve_code(spec: FunctionSpec, base_dir: Path) -> FunctionSpec:
    return spec.model_copy(update={"code": (base_dir / spec.code).resolve()}) if spec.code else spec


def _check_valid_functions(
    data: dict[str, Any], loaded: LoadedYaml, file: str, base_dir: Path
) -> list[ConfigProblem]:
    """After a validation error, the per-function checks on the keys that are valid.

    One run must report every problem: a typo elsewhere must not hide a missing `code` folder.
    """
    functions = data.get("functions")
    if not isinstance(functions, dict):
        return []
    problems: list[ConfigProblem] = []
    for name, raw in functions.items():
        if not isinstance(raw, dict):
            continue
        try:
            spec = FunctionSpec.model_validate(raw)
        except ValidationError as exc:
            # drop the keys already reported; `handler` takes part in no check, so a stand-in will do
            bad = {error["loc"][0] for error in exc.errors() if error["loc"]}
            kept = {key: value for key, value in raw.items() if key not in bad}
            try:
                spec = FunctionSpec.model_validate({**kept, "handler": "reported.elsewhere"})
            except ValidationError:
                continue
        problems.extend(_check_function(str(name), _resolve_code(spec, base_dir), loaded, file))
    return problems


class _Problems(list[ConfigProblem]):
    """Problems found by the cross-checks, each pinned to the line of the key an operator would edit."""

    def __init__(self, loaded: LoadedYaml, file: str) -> None:
        super().__init__()
        self._loaded = loaded
        self._file = file

    def add(self, path: tuple[str | int, ...], message: str) -> None:
        self.append(ConfigProblem(self._file, self._loaded.line_of(path, key=True), dotted(path), message))


def _check_function(name: str, spec: FunctionSpec, loaded: LoadedYaml, file: str) -> list[ConfigProblem]:
    """Checks of one function that span several of its keys or look outside the file."""
    problems = _Problems(loaded, file)

    def problem(key: str, message: str) -> None:
        problems.add(("functions", name, key), message)

    if spec.code is not None and not spec.code.is_dir():
        problem("code", f"expected an existing folder, found no folder at {spec.code}")
    if spec.concurrency is not None and spec.warm > spec.concurrency:
        problem("warm", f"expected at most concurrency ({spec.concurrency}) warm processes, found {spec.warm}")
    return problems


def _cross_check(config: Config, loaded: LoadedYaml, file: str) -> list[ConfigProblem]:
    """Checks that span several keys, each pinned to the key an operator would edit."""
    problems = _Problems(loaded, file)
    problem = problems.add

    for name, spec in config.functions.items():
        problems.extend(_check_function(name, spec, loaded, file))
    for name, spec in config.functions.items():
        for key in ("on_success", "on_failure"):
            _check_destination(problems, ("functions", name, "async", key), getattr(spec.async_, key), config,
                               owner=name)
        dead_letter = spec.async_.dead_letter
        if dead_letter is not None and dead_letter not in config.queues:
            problem(("functions", name, "async", "dead_letter"),
                    f"expected one of the queues, found {dead_letter!r}" + _suggest(dead_letter, config.queues))
    for name, queue in config.queues.items():
        if queue.dead_letter is not None:
            if queue.dead_letter == name:
                problem(("queues", name, "dead_letter"), "a queue cannot be its own dead-letter queue")
            elif queue.dead_letter not in config.queues:
                problem(("queues", name, "dead_letter"), f"expected one of the queues, found {queue.dead_letter!r}"
                        + _suggest(queue.dead_letter, config.queues))
    problems.extend(_check_routes(config, loaded, file))
    reserved = sum(spec.concurrency or 0 for spec in config.functions.values())
    if reserved > config.max_concurrency:
        problem(
            ("max_concurrency",),
            f"expected at least the {reserved} concurrency that functions reserve in all, "
            f"found {config.max_concurrency}",
        )
    else:
        unreserved = config.unreserved_concurrency()
        for name, spec in config.functions.items():
            if spec.concurrency is None and spec.warm > unreserved:
                problem(
                    ("functions", name, "warm"),
                    f"expected at most the unreserved concurrency ({unreserved}), found {spec.warm}",
                )
    return problems


def _check_routes(config: Config, loaded: LoadedYaml, file: str) -> list[ConfigProblem]:
    problems = _Problems(loaded, file)
    problem = problems.add

    names: dict[str, int] = {}
    for index, route in enumerate(config.routes):
        path: tuple[str | int, ...] = ("routes", index)
        function = config.functions.get(route.function)
        if function is None:
            problem((*path, "function"), f"expected one of the functions, found {route.function!r}"
                    + _suggest(route.function, config.functions))
        if isinstance(route, QueueRouteSpec):
            queue = config.queues.get(route.queue)
            if queue is None:
                problem((*path, "queue"), f"expected one of the queues, found {route.queue!r}"
                        + _suggest(route.queue, config.queues))
            elif queue.fifo and route.batch_size > 10:
                problem((*path, "batch_size"), f"expected at most 10 for the FIFO queue {route.queue!r} "
                        f"(as Lambda), found {route.batch_size}")
            elif queue.fifo and route.batching_window > 0:
                problem((*path, "batching_window"), f"expected no batching_window for the FIFO queue "
                        f"{route.queue!r} (Lambda allows windows on standard queues only)")
            elif function is not None and function.timeout + route.batching_window > queue.visibility_timeout:
                # as Lambda: a batch must be collected and finished before its messages become visible
                # again, or they would be received twice
                problem((*path, "queue"), f"expected a queue whose visibility_timeout ({queue.visibility_timeout:g}s)"
                        f" is at least the function's timeout plus the batching_window "
                        f"({function.timeout + route.batching_window:g}s)")
        elif isinstance(route, StreamRouteSpec):
            if route.stream not in config.streams:
                problem((*path, "stream"), f"expected one of the streams, found {route.stream!r}"
                        + _suggest(route.stream, config.streams))
            _check_destination(problems, (*path, "on_failure"), route.on_failure, config)
        elif isinstance(route, FilesRouteSpec) and not route.files.path.is_dir():
            problem((*path, "files", "path"), f"expected an existing folder, found no folder at {route.files.path}")
        name = mapping_name(route, index)
        if name in names:
            problem((*path, "name"), f"two routes are both named {name!r} (routes[{names[name]}]); give one a `name`")
        names[name] = index
    return problems


def _check_destination(problems: _Problems, path: tuple[str | int, ...], destination: DestinationSpec | None,
                       config: Config, owner: str | None = None) -> None:
    """A destination names a function or queue that exists, and a function is never its own."""
    if destination is None:
        return
    if destination.function is not None:
        if destination.function == owner:
            problems.add((*path, "function"), "a function cannot be its own destination (as in Lambda)")
        elif destination.function not in config.functions:
            problems.add((*path, "function"), f"expected one of the functions, found {destination.function!r}"
                         + _suggest(destination.function, config.functions))
    if destination.queue is not None and destination.queue not in config.queues:
        problems.add((*path, "queue"), f"expected one of the queues, found {destination.queue!r}"
                     + _suggest(destination.queue, config.queues))


def route_source(route: Any) -> str:
    """The route's source, as status shows it: `queue:orders`, `http:POST /orders/{id}`, ..."""
    if isinstance(route, QueueRouteSpec):
        return f"queue:{route.queue}"
    if isinstance(route, StreamRouteSpec):
        return f"stream:{route.stream}"
    if isinstance(route, HttpRouteSpec):
        return f"http:{_http_label(route)}"
    if isinstance(route, FilesRouteSpec):
        return f"files:{route.files.path}"
    return f"schedule:{route.schedule}"


def mapping_name(route: Any, index: int | None = None) -> str:
    """A route's name in metrics, status and durable state: `name`, or one derived from its source
    (`queue->function`, `METHOD /path`, the folder's name, `schedule-<index>`)."""
    if route.name:
        return str(route.name)
    if isinstance(route, QueueRouteSpec):
        return f"{route.queue}->{route.function}"
    if isinstance(route, StreamRouteSpec):
        return f"{route.stream}->{route.function}"
    if isinstance(route, HttpRouteSpec):
        return _http_label(route)
    if isinstance(route, FilesRouteSpec):
        return route.files.path.name or "files"
    return f"schedule-{index}"


def _http_label(route: HttpRouteSpec) -> str:
    methods = route.http.methods()
    return f"{'|'.join(sorted(methods)) if methods else 'ANY'} {route.http.path}"


def _suggest(name: str, known: Any) -> str:
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if matches:
        return f"; did you mean {matches[0]!r}?"
    return " (declare it under `queues:`)" if known is not None and not known else ""


#: keys whose values are one of a few words, for a friendlier message than the pattern's
_CHOICES = {
    "log_level": ("debug", "info", "warning", "error"),
    "durability": ("normal", "full"),
    "starting_position": ("trim_horizon", "latest", "at_timestamp"),
    "invocation": ("sync", "async"),
    "catch_up": ("none", "latest", "all"),
    "overlap": ("allow", "skip", "queue"),
    "mode": ("auto", "inotify", "poll"),
}

_EXPECTED = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping of keys",
    "model_type": "a mapping of keys",
    "model_attributes_type": "a mapping of keys",
    "list_type": "a list",
    "path_type": "a path",
}


def _translate(error: Any, loaded: LoadedYaml, file: str) -> ConfigProblem:
    loc: tuple[str | int, ...] = tuple(error["loc"])
    kind = error["type"]
    found = _describe(error.get("input"))
    route_model = None
    if len(loc) >= 3 and loc[0] == "routes" and loc[2] in ROUTE_MODELS:
        # a tagged union puts the tag (the route's source kind) into the path: the YAML has no such level
        route_model = ROUTE_MODELS[str(loc[2])]
        loc = (*loc[:2], *loc[3:])
    if kind == "extra_forbidden" and route_model is not None:
        allowed = [field.alias or name for name, field in route_model.model_fields.items()]
        matches = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {matches[0]!r}?" if matches else f"; expected one of: {', '.join(sorted(allowed))}"
        return ConfigProblem(file, loaded.line_of(loc, key=True), dotted(loc), f"unknown key{hint}")
    if loc and loc[-1] == "[key]":
        # a bad mapping key: pydantic appends a marker; the operator edits the key itself
        loc = loc[:-1]
        return ConfigProblem(file, loaded.line_of(loc, key=True), dotted(loc), _message(error, kind, loc, found))
    if kind == "extra_forbidden":
        key = str(loc[-1])
        hint = _did_you_mean(key, loc[:-1])
        return ConfigProblem(file, loaded.line_of(loc, key=True), dotted(loc), f"unknown key{hint}")
    if kind == "missing":
        return ConfigProblem(file, loaded.line_of(loc[:-1], key=True), dotted(loc), "required key is missing")
    return ConfigProblem(file, loaded.line_of(loc), dotted(loc), _message(error, kind, loc, found))


def _message(error: Any, kind: str, loc: tuple[str | int, ...], found: str) -> str:
    if kind in _EXPECTED:
        message = f"expected {_EXPECTED[kind]}, found {found}"
    elif kind == "value_error":
        message = str(error["msg"]).removeprefix("Value error, ")
        message = f"{message}, found {found}" if message.startswith("expected") else message
    elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        bound = next(iter(error["ctx"].values()))
        relation = {"greater_than_equal": ">=", "less_than_equal": "<=", "greater_than": ">", "less_than": "<"}
        message = f"expected a number {relation[kind]} {bound}, found {found}"
    elif kind == "string_pattern_mismatch" and loc and loc[-1] in _CHOICES:
        message = f"expected one of {', '.join(_CHOICES[str(loc[-1])])}; found {found}"
    else:
        msg = str(error["msg"])
        message = f"{msg[0].lower()}{msg[1:]}; found {found}"
    return message


def _describe(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _did_you_mean(key: str, parent: tuple[str | int, ...]) -> str:
    allowed = _allowed_keys(parent)
    matches = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if matches:
        return f"; did you mean {matches[0]!r}?"
    return f"; expected one of: {', '.join(sorted(allowed))}" if allowed else ""


def _allowed_keys(parent: tuple[str | int, ...]) -> list[str]:
    """Keys the schema allows at `parent`, found by walking the JSON Schema along the path."""
    schema = json_schema()
    defs = schema.get("$defs", {})
    node: dict[str, Any] = schema
    for part in parent:
        node = _deref(node, defs)
        if isinstance(part, str) and part in node.get("properties", {}):
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        elif "items" in node:
            node = node["items"]
        else:
            return []
    return list(_deref(node, defs).get("properties", {}))


def _deref(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[-1]]
    for alternative in node.get("anyOf", []):
        if "$ref" in alternative or "properties" in alternative:
            return _deref(alternative, defs)
    return node
