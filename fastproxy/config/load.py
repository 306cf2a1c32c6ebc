"""Read a configuration file into plain Python data, with positions for syntax errors.

Owns: choosing the format by extension (JSON, the KrakenD primary; YAML; TOML), and turning a
syntax error into `line L, column C`. It never returns half a document: a file either parses
whole or raises ConfigError. Meaning is checked by `compile.py`.
"""

import os
import re

import msgspec


class ConfigError(Exception):
    """A configuration that must not run. `problems` lists every error found, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


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


def _load_json(path: str, data: bytes) -> object:
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        msg = str(exc)
        marker = "(byte "
        if marker in msg:
            offset = int(msg[msg.rindex(marker) + len(marker):].rstrip(")"))
            line, col = _line_col(data, offset)
            reason = msg[: msg.rindex(marker)].strip().removeprefix("JSON is malformed:").strip()
            raise ConfigError([f"{path}: line {line}, column {col}: invalid JSON: {reason}"]) from None
        if "truncated" in msg:  # msgspec gives no offset here: the document ends too early
            line, col = _line_col(data, len(data))
            raise ConfigError([f"{path}: line {line}, column {col}: invalid JSON: unexpected end of the file"]) from None
        raise ConfigError([f"{path}: invalid JSON: {msg}"]) from None


def _load_yaml(path: str, data: bytes) -> object:
    import yaml

    try:
        return yaml.safe_load(data)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{path}: {where}invalid YAML: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
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
