"""Read a YAML file into plain data plus a map from each key path to its line.

PyYAML's composed node tree keeps marks; the constructed data does not. We walk both so that every
validation error can name the line of the key (or value) it is about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from eventd.errors import ConfigProblem

Path_ = tuple[str | int, ...]


@dataclass
class LoadedYaml:
    data: Any
    #: key path -> 1-based line of the key (for mappings) or the item (for sequences)
    key_lines: dict[Path_, int] = field(default_factory=dict)
    #: key path -> 1-based line of the value
    value_lines: dict[Path_, int] = field(default_factory=dict)
    problems: list[ConfigProblem] = field(default_factory=list)

    def line_of(self, path: Path_, *, key: bool = False) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        table = self.key_lines if key else self.value_lines
        for end in range(len(path), -1, -1):
            line = table.get(path[:end]) or self.key_lines.get(path[:end])
            if line:
                return line
        return None


def load_yaml(text: str, file: str) -> LoadedYaml:
    """Parse `text`; syntax errors and duplicate keys become problems, never exceptions."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        if mark and exc.context_mark and mark.index >= len(text):
            # an unclosed quote or bracket fails at the end of the file, past its last line: point
            # at where the unclosed thing starts, which is the line the operator has to fix
            mark = exc.context_mark
        line = mark.line + 1 if mark else None
        problem = f"{exc.problem} {exc.context or ''}".strip()
        return LoadedYaml(None, problems=[ConfigProblem(file, line, "", f"invalid YAML: {problem}")])
    except yaml.YAMLError as exc:
        return LoadedYaml(None, problems=[ConfigProblem(file, None, "", f"invalid YAML: {exc}")])
    loaded = LoadedYaml(data)
    if root is not None:
        _walk(root, (), loaded, file, set())
    if any(problem.message == _RECURSIVE for problem in loaded.problems):
        # the constructed data contains itself: validating it would recurse without end
        loaded.data = None
    return loaded


_RECURSIVE = "invalid YAML: an alias refers to a node that contains it"


def _walk(node: yaml.Node, path: Path_, loaded: LoadedYaml, file: str, ancestors: set[int]) -> None:
    loaded.value_lines[path] = node.start_mark.line + 1
    if id(node) in ancestors:
        loaded.problems.append(ConfigProblem(file, node.start_mark.line + 1, _dotted(path), _RECURSIVE))
        return
    ancestors = ancestors | {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = (*path, key)
            if key in seen:
                loaded.problems.append(
                    ConfigProblem(file, key_node.start_mark.line + 1, _dotted(child), "duplicate key")
                )
            seen.add(key)
            loaded.key_lines[child] = key_node.start_mark.line + 1
            _walk(value_node, child, loaded, file, ancestors)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            loaded.key_lines[child] = item.start_mark.line + 1
            _walk(item, child, loaded, file, ancestors)


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


dotted = _dotted
