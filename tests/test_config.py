"""Config validation: every bad file gets every problem as `file:line: key.path: message`, good files load.

Real files in tmp dirs, loaded through `eventd.config.load` (the path the daemon and the CLI use).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from eventd.config import ConfigError, load
from eventd.config.model import DEFAULT_LISTEN

REPO = Path(__file__).resolve().parent.parent

#: (id, file text, expected problem lines). `{file}` is the config's path, `{dir}` its folder.
BAD_CONFIGS: list[tuple[str, str, list[str]]] = [
    (
        "yaml-syntax-error",
        """\
        functions:
          hello:
            handler: hello.handler
              timeout: 3s
        """,
        ["{file}:4: invalid YAML: mapping values are not allowed here"],
    ),
    (
        # fails at the end of the file; the line to fix is where the bracket opens
        "yaml-unclosed-bracket",
        """\
        listen: 127.0.0.1:9271
        functions:
          hello:
            handler: [hello.handler
        """,
        [
            "{file}:4: invalid YAML: expected ',' or ']', but got '<stream end>' "
            "while parsing a flow sequence"
        ],
    ),
    (
        "top-level-not-a-mapping",
        """\
        # a list is not a config
        - hello
        - world
        """,
        ["{file}:2: expected a mapping of keys at the top of the file"],
    ),
    (
        "unknown-top-level-key",
        """\
        listen: 127.0.0.1:9271
        max_concurency: 4
        """,
        ["{file}:2: max_concurency: unknown key; did you mean 'max_concurrency'?"],
    ),
    (
        "unknown-top-level-key-no-near-match",
        "zzz: 1\n",
        [
            "{file}:1: zzz: unknown key; expected one of: drain_timeout, durability, functions, http, listen, "
            "log_level, max_concurrency, queues, routes, state_dir, streams"
        ],
    ),
    (
        "unknown-function-key",
        """\
        functions:
          hello:
            handler: hello.handler
            timout: 3s
        """,
        ["{file}:4: functions.hello.timout: unknown key; did you mean 'timeout'?"],
    ),
    (
        "bad-duration",
        """\
        functions:
          hello:
            handler: hello.handler
            timeout: 3 sec
        """,
        ["{file}:4: functions.hello.timeout: expected a duration like 500ms, 30s, 5m or 1h, found '3 sec'"],
    ),
    (
        "negative-duration",
        "drain_timeout: -5\n",
        [
            "{file}:1: drain_timeout: expected a duration like 500ms, 30s, 5m or 1h, not a negative number, "
            "found -5"
        ],
    ),
    (
        "timeout-above-lambda-limit",
        """\
        functions:
          hello:
            handler: hello.handler
            timeout: 16m
        """,
        ["{file}:4: functions.hello.timeout: expected a timeout above 0 and at most 15m, found '16m'"],
    ),
    (
        "memory-below-range",
        """\
        functions:
          hello:
            handler: hello.handler
            memory_mb: 64
        """,
        ["{file}:4: functions.hello.memory_mb: expected a number >= 128, found 64"],
    ),
    (
        "memory-above-range",
        """\
        functions:
          hello:
            handler: hello.handler
            memory_mb: 20000
        """,
        ["{file}:4: functions.hello.memory_mb: expected a number <= 10240, found 20000"],
    ),
    (
        "negative-concurrency",
        """\
        functions:
          hello:
            handler: hello.handler
            concurrency: -1
        """,
        ["{file}:4: functions.hello.concurrency: expected a number >= 0, found -1"],
    ),
    (
        "warm-above-concurrency",
        """\
        functions:
          hello:
            handler: hello.handler
            concurrency: 2
            warm: 3
        """,
        ["{file}:5: functions.hello.warm: expected at most concurrency (2) warm processes, found 3"],
    ),
    (
        "reserved-concurrency-above-max",
        """\
        max_concurrency: 4
        functions:
          a:
            handler: a.handler
            concurrency: 3
          b:
            handler: b.handler
            concurrency: 2
        """,
        [
            "{file}:1: max_concurrency: expected at least the 5 concurrency that functions reserve in all, "
            "found 4"
        ],
    ),
    (
        "warm-above-unreserved-concurrency",
        """\
        max_concurrency: 4
        functions:
          a:
            handler: a.handler
            concurrency: 3
          b:
            handler: b.handler
            warm: 2
        """,
        ["{file}:8: functions.b.warm: expected at most the unreserved concurrency (1), found 2"],
    ),
    (
        "bad-handler",
        """\
        functions:
          hello:
            handler: hello
        """,
        [
            "{file}:3: functions.hello.handler: expected `module.function` "
            "(like `hello.handler` or `pkg.mod.handler`), found 'hello'"
        ],
    ),
    (
        "bad-function-name",
        """\
        functions:
          hello world:
            handler: hello.handler
        """,
        [
            "{file}:2: functions.hello world: expected a function name of 1-64 letters, digits, '-' or '_', "
            "found 'hello world'"
        ],
    ),
    (
        "reserved-env-var",
        """\
        functions:
          hello:
            handler: hello.handler
            environment:
              GREETING: Hi
              AWS_REGION: eu-west-1
        """,
        [
            "{file}:6: functions.hello.environment.AWS_REGION: this variable is reserved: "
            "eventd sets it for every function"
        ],
    ),
    (
        "env-value-is-a-list",
        """\
        functions:
          hello:
            handler: hello.handler
            environment:
              NAMES: [ann, bo]
        """,
        [
            "{file}:5: functions.hello.environment.NAMES: expected a string (environment values are text), "
            "found a list"
        ],
    ),
    (
        "missing-handler",
        """\
        functions:
          hello:
            memory_mb: 256
        """,
        ["{file}:2: functions.hello.handler: required key is missing"],
    ),
    (
        "code-folder-missing",
        """\
        functions:
          hello:
            handler: hello.handler
            code: nowhere/
        """,
        ["{file}:4: functions.hello.code: expected an existing folder, found no folder at {dir}/nowhere"],
    ),
    (
        "duplicate-key",
        """\
        functions:
          hello:
            handler: hello.handler
            timeout: 3s
            handler: other.handler
        """,
        ["{file}:5: functions.hello.handler: duplicate key"],
    ),
    (
        "listen-without-port",
        "listen: localhost\n",
        ["{file}:1: listen: expected host:port, like 127.0.0.1:9271, found 'localhost'"],
    ),
    (
        "listen-port-out-of-range",
        "listen: 127.0.0.1:70000\n",
        ["{file}:1: listen: expected host:port, like 127.0.0.1:9271, found '127.0.0.1:70000'"],
    ),
    (
        "bad-log-level",
        "log_level: verbose\n",
        ["{file}:1: log_level: expected one of debug, info, warning, error; found 'verbose'"],
    ),
    (
        "bad-durability",
        "durability: sometimes\n",
        ["{file}:1: durability: expected one of normal, full; found 'sometimes'"],
    ),
    (
        "backoff-max-below-initial-and-zero-initial",
        """\
        functions:
          f:
            handler: m.f
            async:
              retry_backoff: {initial: 10s, max: 1s}
              throttle_backoff: {initial: 0s, max: 1s}
        """,
        [
            "{file}:5: functions.f.async.retry_backoff: expected max (1s) to be at least initial (10s), "
            "found a mapping",
            "{file}:6: functions.f.async.throttle_backoff: expected an initial wait of at least 1ms "
            "(0 would retry in a tight loop), found a mapping",
        ],
    ),
    (
        "dangling-references",
        """\
        queues:
          q: {dead_letter: q}
          dlq: {}
        streams:
          s: {}
        functions:
          f:
            handler: m.f
            async:
              on_success: {queue: dql}
              on_failure: {function: f}
              dead_letter: nope
        routes:
          - queue: qq
            function: f
          - stream: s
            function: g
          - stream: s
            function: f
            name: s->g
        """,
        [
            "{file}:2: queues.q.dead_letter: a queue cannot be its own dead-letter queue",
            "{file}:10: functions.f.async.on_success.queue: expected one of the queues, found 'dql'; "
            "did you mean 'dlq'?",
            "{file}:11: functions.f.async.on_failure.function: a function cannot be its own destination "
            "(as in Lambda)",
            "{file}:12: functions.f.async.dead_letter: expected one of the queues, found 'nope'",
            "{file}:14: routes[0].queue: expected one of the queues, found 'qq'; did you mean 'q'?",
            "{file}:17: routes[1].function: expected one of the functions, found 'g'",
            "{file}:20: routes[2].name: two routes are both named 's->g' (routes[1]); give one a `name`",
        ],
    ),
    (
        "queue-lease-shorter-than-timeout-plus-window",
        """\
        functions:
          f: {handler: m.f, timeout: 20s}
        queues:
          q: {visibility_timeout: 30s}
        routes:
          - queue: q
            function: f
            batching_window: 15s
        """,
        [
            "{file}:6: routes[0].queue: expected a queue whose visibility_timeout (30s) is at least the function's "
            "timeout plus the batching_window (35s)",
        ],
    ),
    (
        "route-without-a-source-and-unknown-route-key",
        """\
        functions:
          f: {handler: m.f}
        queues:
          q: {}
        routes:
          - function: f
          - queue: q
            function: f
            batchsize: 5
        """,
        [
            "{file}:6: routes[0]: expected a route with one source: queue, stream, http, files or schedule; "
            "found a mapping",
            "{file}:9: routes[1].batchsize: unknown key; did you mean 'batch_size'?",
        ],
    ),
    (
        # schema errors, cross-key checks and a missing folder, all in one run, in line order
        "several-problems",
        """\
        listn: 127.0.0.1:9271
        log_level: loud
        functions:
          hello:
            handler: hello
            timout: 3s
            memory_mb: 64
          worker:
            handler: worker.handler
            code: missing/
            environment:
              AWS_REGION: eu-west-1
            concurrency: 1
            warm: 2
          bad name:
            handler: a.b
            code: gone/
        """,
        [
            "{file}:1: listn: unknown key; did you mean 'listen'?",
            "{file}:2: log_level: expected one of debug, info, warning, error; found 'loud'",
            "{file}:5: functions.hello.handler: expected `module.function` "
            "(like `hello.handler` or `pkg.mod.handler`), found 'hello'",
            "{file}:6: functions.hello.timout: unknown key; did you mean 'timeout'?",
            "{file}:7: functions.hello.memory_mb: expected a number >= 128, found 64",
            "{file}:10: functions.worker.code: expected an existing folder, found no folder at {dir}/missing",
            "{file}:12: functions.worker.environment.AWS_REGION: this variable is reserved: "
            "eventd sets it for every function",
            "{file}:14: functions.worker.warm: expected at most concurrency (1) warm processes, found 2",
            "{file}:15: functions.bad name: expected a function name of 1-64 letters, digits, '-' or '_', "
            "found 'bad name'",
            "{file}:17: functions.bad name.code: expected an existing folder, found no folder at {dir}/gone",
        ],
    ),
]


def write_config(folder: Path, text: str, name: str = "eventd.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def expected_lines(lines: list[str], path: Path) -> list[str]:
    return [line.format(file=path, dir=path.resolve().parent) for line in lines]


@pytest.mark.parametrize(
    ("text", "expected"), [case[1:] for case in BAD_CONFIGS], ids=[case[0] for case in BAD_CONFIGS]
)
def test_bad_config_reports_every_problem_with_its_line(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value).splitlines() == expected_lines(expected, path)
    assert [str(problem) for problem in caught.value.problems] == expected_lines(expected, path)


def test_unreadable_config_is_one_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "absent.yaml")
    assert str(caught.value) == f"{tmp_path / 'absent.yaml'}: cannot read the file: No such file or directory"


def test_non_utf8_config_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "eventd.yaml"
    path.write_bytes(b"listen: \xff\xfe\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == f"{path}: the file is not UTF-8 text"


def test_recursive_alias_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    path = write_config(tmp_path, "functions: &loop\n  hello: *loop\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == (
        f"{path}:1: functions.hello: invalid YAML: an alias refers to a node that contains it"
    )


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1.5s", 1.5), ("10", 10.0), ("2.5", 2.5)],
)
def test_durations(tmp_path: Path, written: str, seconds: float) -> None:
    path = write_config(
        tmp_path,
        f"""\
        drain_timeout: {written}
        functions:
          hello:
            handler: hello.handler
            timeout: {written if seconds <= 900 else "15m"}
            idle_timeout: {written}
        """,
    )
    config = load(path)
    assert config.drain_timeout == seconds
    assert config.functions["hello"].idle_timeout == seconds
    assert config.functions["hello"].timeout == min(seconds, 900.0)


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc" / "eventd"
    (folder / "functions").mkdir(parents=True)
    path = write_config(
        folder,
        """\
        state_dir: ../state
        functions:
          hello:
            handler: hello.handler
            code: functions/
        """,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # a folder of the same name under the cwd must not be what `code` finds
    (elsewhere / "functions").mkdir()
    monkeypatch.chdir(elsewhere)
    # the config itself named relative to the cwd, as `eventd run -c ../etc/eventd/eventd.yaml` would
    config = load(Path("..") / path.relative_to(tmp_path))
    assert config.functions["hello"].code == folder.resolve() / "functions"
    assert config.state_dir == (tmp_path / "etc" / "state").resolve()


def test_code_folder_is_checked_against_the_config_folder_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "conf"
    path = write_config(folder, "functions:\n  hello:\n    handler: hello.handler\n    code: functions\n")
    # the folder exists under the cwd only: still a problem
    (tmp_path / "functions").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == (
        f"{path}:4: functions.hello.code: expected an existing folder, "
        f"found no folder at {folder.resolve()}/functions"
    )


def test_defaults(tmp_path: Path) -> None:
    path = write_config(tmp_path, "functions:\n  hello:\n    handler: hello.handler\n")
    config = load(path)
    spec = config.functions["hello"]
    assert (spec.timeout, spec.memory_mb, spec.concurrency, spec.warm, spec.code) == (3.0, 128, None, 0, None)
    assert spec.environment == {}
    assert config.listen == DEFAULT_LISTEN == "127.0.0.1:9271"
    assert config.state_dir == (tmp_path / "state").resolve()
    assert config.log_level == "info"


def test_empty_file_is_a_config_with_no_functions(tmp_path: Path) -> None:
    config = load(write_config(tmp_path, "# nothing yet\n"))
    assert config.functions == {}
    assert config.listen == "127.0.0.1:9271"


def test_environment_values_become_text(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        functions:
          hello:
            handler: hello.handler
            environment:
              RETRIES: 3
              RATIO: 0.5
              VERBOSE: true
              NAME: ann
        """,
    )
    assert load(path).functions["hello"].environment == {
        "RETRIES": "3", "RATIO": "0.5", "VERBOSE": "true", "NAME": "ann"
    }


SHIPPED_CONFIGS = sorted(
    [*(REPO / "config").rglob("*.yaml"), *(REPO / "eventd" / "examples").rglob("*.yaml")]
)


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=[str(p.relative_to(REPO)) for p in SHIPPED_CONFIGS])
def test_shipped_configs_validate(path: Path) -> None:
    config = load(path)
    assert config.functions, f"{path} serves no function"


def test_shipped_configs_are_found() -> None:
    # guards the glob above: an empty parameter list would make the test above vanish silently
    names = {str(p.relative_to(REPO)) for p in SHIPPED_CONFIGS}
    assert {"config/eventd.yaml", "eventd/examples/eventd.yaml"} <= names


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "eventd", "schema"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_schema_is_a_valid_json_schema(schema: dict[str, Any]) -> None:
    validator = jsonschema.validators.validator_for(schema)
    assert validator is jsonschema.Draft202012Validator
    validator.check_schema(schema)


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=[str(p.relative_to(REPO)) for p in SHIPPED_CONFIGS])
def test_shipped_configs_match_the_schema(schema: dict[str, Any], path: Path) -> None:
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize(
    "data",
    [
        {"listn": "127.0.0.1:9271"},
        {"functions": {"hello": {"handler": "hello.handler", "timout": "3s"}}},
        {"functions": {"hello": {"code": "functions/"}}},
        {"functions": {"hello": {"handler": "hello.handler", "timeout": "3 sec"}}},
        {"functions": {"hello": {"handler": "hello.handler", "memory_mb": 64}}},
        {"log_level": "verbose"},
    ],
    ids=["unknown-key", "unknown-function-key", "missing-handler", "bad-duration", "memory", "log-level"],
)
def test_schema_rejects_bad_configs(schema: dict[str, Any], data: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(data)
