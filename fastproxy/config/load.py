"""Read a configuration file into plain Python data, with positions for syntax errors.

Owns: choosing the format by extension (JSON, the KrakenD primary; YAML; TOML), and turning a
syntax error into `line L, column C`. It never returns half a document: a file either parses
whole or raises ConfigError. Meaning is checked by `compile.py`.
"""

import os
import re
from typing import Any, Optional

import msgspec


class ConfigError(Exception):
    """A configuration that must not run. `problems` lists every error found, one line each."""

    def __init__(self, problems: list[str], warnings: Optional[list[str]] = None) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.warnings = warnings or []  # shown too: a migrating user sees everything at once


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    offset = max(0, min(offset, len(data)))
    line = data.count(b"\n", 0, offset) + 1
    col = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return line, col


def load_file(path: str) -> object:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the file: {exc.strerror or exc}"]) from None
    ext = os.path.splitext(path)[1].lower()
    if ext in (".yaml", ".yml"):
        return _load_yaml(path, data)
    if ext == ".toml":
        return _load_toml(path, data)
    return _load_json(path, data)


def _template_error(path: str, data: bytes) -> Optional[ConfigError]:
    """A file that does not parse and holds `{{`: KrakenD flexible configuration, not rendered."""
    i = data.find(b"{{")
    if i < 0 or data.find(b"}}", i) < 0:
        return None
    line, col = _line_col(data, i)
    return ConfigError([f"{path}: line {line}, column {col}: this is a KrakenD flexible-configuration template "
                        "({{ ... }}), not a configuration: render it first (KrakenD: FC_ENABLE=1 "
                        f"FC_OUT=rendered.json krakend check -c {path}), then give fastproxy the rendered file"])


def _load_json(path: str, data: bytes) -> object:
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        template = _template_error(path, data)
        if template is not None:
            raise template from None
        msg = str(exc)
        marker = "(byte "
        if marker in msg:
            offset = int(msg[msg.rindex(marker) + len(marker):].rstrip(")"))
            line, col = _line_col(data, offset)
            reason = msg[: msg.rindex(marker)].strip().removeprefix("JSON is malformed:").strip()
            raise ConfigError([f"{path}: line {line}, column {col}: invalid JSON: {reason}"]) from None
        if "truncated" in msg:  # msgspec gives no offset here: the document ends too early
            line, col = _line_col(data, len(data))
            raise ConfigError([f"{path}: line {line}, column {col}: invalid JSON: unexpected end of the file"]) \
                from None
        raise ConfigError([f"{path}: invalid JSON: {msg}"]) from None


def _load_yaml(path: str, data: bytes) -> object:
    import yaml

    try:
        return yaml.safe_load(data)
    except yaml.YAMLError as exc:
        template = _template_error(path, data)
        if template is not None:
            raise template from None
        mark = getattr(exc, "problem_mark", None)
        if isinstance(exc, yaml.MarkedYAMLError) and mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}: "
            raise ConfigError([f"{path}: {where}invalid YAML: {exc.problem}"]) from None
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from None


_TOML_AT = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")


def _load_toml(path: str, data: bytes) -> object:
    import tomllib

    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: not UTF-8 at byte {exc.start}"]) from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib ends its message with "(at line L, column C)" or "(at end of document)"; say it
        # first, as for JSON and YAML.
        msg = str(exc)
        m = _TOML_AT.search(msg)
        if m is None:
            raise ConfigError([f"{path}: invalid TOML: {msg}"]) from None
        line, col = (int(m.group(1)), int(m.group(2))) if m.group(1) else _line_col(data, len(data))
        raise ConfigError([f"{path}: line {line}, column {col}: invalid TOML: {msg[:m.start()]}"]) from None


# -- where a JSON path stands in the file ---------------------------------------------------

Path = tuple[Any, ...]  # the keys (str) and indexes (int) from the root to a value
_PATH_PART = re.compile(r'\.([^.\[\]]+)|\["((?:[^"\\]|\\.)*)"\]|\[(\d+)\]')
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+')


def path_parts(path: str) -> Optional[Path]:
    """`$.endpoints[3].extra_config["qos/ratelimit/router"].max_rate` as its keys and indexes."""
    if not path.startswith("$"):
        return None
    parts: list[str | int] = []
    pos = 1
    while pos < len(path):
        m = _PATH_PART.match(path, pos)
        if m is None:
            return None
        key, quoted, index = m.groups()
        parts.append(int(index) if index is not None else (key if key is not None else quoted))
        pos = m.end()
    return tuple(parts)


def json_positions(data: bytes) -> dict[Path, tuple[int, int]]:
    """Every value of a JSON document: its path (a tuple of keys and indexes) -> (line, column).

    One pass of a tokenizer; used only to say where an error is, so it is lenient: it never
    raises, and what it cannot follow it leaves out."""
    positions: dict[Path, tuple[int, int]] = {}
    stack: list[list[Any]] = []  # per open container: [is_object, current key or index, expecting a key]
    path: list[str | int] = []
    for m in _JSON_TOKEN.finditer(data):
        tok = m.group()
        top = stack[-1] if stack else None
        if tok in (b",", b":"):
            if tok == b"," and top is not None:
                if top[0]:
                    top[2] = True
                else:
                    top[1] += 1
            continue
        if tok in (b"}", b"]"):
            if stack:
                stack.pop()
                if stack:  # the root container adds nothing to `path`
                    path.pop()
            continue
        if top is not None and top[0] and top[2]:  # an object key
            try:
                top[1] = msgspec.json.decode(tok)
            except msgspec.DecodeError:
                top[1] = tok.decode("utf-8", "replace").strip('"')
            top[2] = False
            continue
        here = tuple(path) + ((top[1],) if top is not None else ())
        positions[here] = _line_col(data, m.start())
        if tok in (b"{", b"["):
            if top is not None:
                path.append(top[1])
            stack.append([tok == b"{", 0, tok == b"{"])
    return positions


def yaml_positions(data: bytes) -> dict[Path, tuple[int, int]]:
    """The same for YAML, from the node marks of PyYAML's composer."""
    import yaml

    positions: dict[Path, tuple[int, int]] = {}
    try:
        root = yaml.compose(data, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return positions

    def walk(node: object, path: Path) -> None:
        mark = getattr(node, "start_mark", None)
        if mark is not None:
            positions[path] = (mark.line + 1, mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):  # a complex key names no JSON path
                    walk(v, path + (k.value,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    if root is not None:
        walk(root, ())
    return positions


def with_positions(path: str, problems: list[str]) -> list[str]:
    """Each `$.json.path: message` of a file's errors, with `(line L, column C)` of that value
    (or of the nearest enclosing one that exists) appended. JSON and YAML files only."""
    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return problems
    positions = yaml_positions(data) if ext in (".yaml", ".yml") else json_positions(data) if ext != ".toml" else {}
    if not positions:
        return problems
    out = []
    for problem in problems:
        where, sep, _ = problem.partition(": ")
        parts = path_parts(where) if sep else None
        while parts is not None and parts not in positions and parts:
            parts = parts[:-1]
        if parts and parts in positions:
            line, col = positions[parts]
            problem = f"{problem} (line {line}, column {col})"
        out.append(problem)
    return out
