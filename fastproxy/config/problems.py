"""The problems a configuration has: errors and warnings, each at its JSON path.

Owns the collector every compile step writes to (`Problems`), the translation of msgspec's
validation errors into the user's words ("expected int, found str" at `$.port`), and the
summary of a warning kind across endpoints. Collecting, never raising: compiling goes on after
an error so that `fastproxy check` lists every problem of a file at once.
"""

import re
from collections.abc import Callable
from typing import Any, Optional

import msgspec

from fastproxy.config.durations import DAY, MAX_DURATION, parse_duration
from fastproxy.config.namespaces import closest, did_you_mean, is_comment, listing


class Problems:
    """Collects errors and warnings, each prefixed with its JSON path.

    `note` gathers warnings of one kind (an ignored field, an encoding that differs from
    KrakenD's) over many endpoints; `finish` turns each kind into one warning that names every
    endpoint it affects, so a 140-endpoint file shows a kind once, not 140 times.
    """

    def __init__(self, source: str = "") -> None:
        self.source = source
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.notes: dict[str, tuple[str, str, list[str]]] = {}  # kind -> (first path, message, endpoints)

    def error(self, path: str, msg: str) -> None:
        self.errors.append(f"{path}: {msg}")

    def warn(self, path: str, msg: str) -> None:
        self.warnings.append(f"{path}: {msg}")

    def note(self, kind: str, path: str, msg: str, endpoint: str) -> None:
        first = self.notes.setdefault(kind, (path, msg, []))
        if endpoint not in first[2]:
            first[2].append(endpoint)

    def finish(self) -> None:
        for path, msg, endpoints in self.notes.values():
            n = len(endpoints)
            self.warn(path, f"{msg}; {n} endpoint{'s' if n != 1 else ''}: {listing(endpoints)}")
        self.notes = {}


    def fields(self, raw: Any, typ: type[msgspec.Struct], path: str,
               known_ignored: frozenset[str] = frozenset()) -> None:
        """Report the keys of a control block (a limit, filter or breaker) that `typ` does not
        read. A key close to a field name ("did you mean") is an error: the field it means is
        silently at its default otherwise. Comments (`@...`) pass."""
        if not isinstance(raw, dict):
            return
        known = typ.__struct_encode_fields__  # the names as written in the file (renames applied)
        for key in raw:
            if key in known or is_comment(key):
                continue
            where = f"{path}.{key}"
            if key in known_ignored:
                self.warn(where, "recognised KrakenD field, not used by fastproxy: ignored")
                continue
            hit = closest(key, known)
            if hit is not None:
                self.error(where, f"unknown field: did you mean `{hit}`? (as written, `{hit}` is at its default)")
            else:
                self.warn(where, f"unknown field: ignored{did_you_mean(key, known)}")

    def convert(self, raw: Any, typ: type, path: str, partial: bool = False) -> Any:
        """msgspec.convert with the error re-rooted at `path`; None when invalid.

        Types are strict, as Go's encoding/json is for KrakenD: `"3"` is not the integer 3.
        msgspec stops at the first error; to list every one, a failing top-level field is
        dropped and the rest converted again. With `partial`, the result of that last attempt
        (bad fields at their defaults) is returned so that compiling can go on and find the
        errors further down; the errors recorded still refuse the configuration.
        """
        data = raw
        failed = False
        for _ in range(100):
            try:
                value: Any = msgspec.convert(data, typ, strict=True)
            except msgspec.ValidationError as exc:
                failed = True
                msg = str(exc)
                rest = ""
                as_key = " - at `key` in `$" in msg  # a key of the wrong type (YAML: `1: x`)
                if as_key or " - at `$" in msg:
                    msg, _, rest = msg.rpartition(" - at `key` in `$" if as_key else " - at `$")
                    rest = rest.rstrip("`")
                where, what = _explain(msg, typ, path, rest)
                self.error(where, f"{what} as a key" if as_key else what)
                key = _top_key(rest)
                if key is None and msg.startswith("Object contains unknown field `"):
                    key = msg.split("`")[1]  # an unknown top-level field: drop it and go on
                if not isinstance(data, dict) or key is None or key not in data or _required(typ, key):
                    return None
                data = {k: v for k, v in data.items() if k != key}
            else:
                return value if (partial or not failed) else None
        return None

    def control_block(self, raw: Any, typ: type, path: str) -> Any:
        """A limit, filter or breaker block: its fields checked (`fields`), then converted."""
        self.fields(raw, typ, path)
        return self.convert(raw, typ, path)

    def each(self, items: list[Any], path: str, check: Callable[[Any], Any]) -> bool:
        """Run `check` on every item; each ValueError is an error at `path[i]`. All are reported."""
        ok = True
        for i, item in enumerate(items):
            try:
                check(item)
            except ValueError as exc:
                self.error(f"{path}[{i}]", str(exc))
                ok = False
        return ok

    def duration(self, raw: Any, path: str, default: float, positive: bool = False,
                 maximum: float = MAX_DURATION) -> float:
        if raw is None:
            return default
        try:
            value = parse_duration(raw)
        except ValueError as exc:
            self.error(path, str(exc))
            return default
        if value < 0 or (positive and value == 0):
            self.error(path, f"expected a {'positive' if positive else 'non-negative'} duration, found {raw!r}")
            return default
        if value > maximum:
            self.error(path, f"expected a duration of at most {_shown(maximum)}, found {raw!r}")
            return default
        return value

    def positive_int(self, value: int, path: str, minimum: int = 1) -> int:
        if value < minimum:
            self.error(path, f"expected an integer >= {minimum}, found {value}")
        return value


def _shown(seconds: float) -> str:
    return f"{seconds / DAY:g} days" if seconds > DAY else f"{seconds / 3600:g}h"


def _struct_at(typ: Any, rest: str) -> Any:
    """The msgspec Struct type found at `rest` (".admin") inside `typ`, or None."""
    for name in rest.split(".")[1:] if rest else []:
        if "[" in name or not (isinstance(typ, type) and issubclass(typ, msgspec.Struct)):
            return None
        typ = {f.name: f.type for f in msgspec.structs.fields(typ)}.get(name)
    return typ if isinstance(typ, type) and issubclass(typ, msgspec.Struct) else None


def _field_type(typ: Any, name: str) -> str:
    for f in msgspec.structs.fields(typ):
        if f.name == name:
            return getattr(f.type, "__name__", None) or str(f.type).replace("typing.", "")
    return "a value"


def _top_key(rest: str) -> Optional[str]:
    m = re.match(r"\.([A-Za-z_][A-Za-z0-9_]*)", rest)
    return m.group(1) if m else None


def _required(typ: Any, key: str) -> bool:
    if not (isinstance(typ, type) and issubclass(typ, msgspec.Struct)):
        return False
    return any(f.name == key and f.required for f in msgspec.structs.fields(typ))


def _explain(msg: str, typ: Any, path: str, rest: str) -> tuple[str, str]:
    """msgspec's "Expected `int`, got `str`" as (JSON path, "expected int, found str")."""
    where = path + rest
    if msg.startswith("Expected `") and ", got `" in msg:
        exp, _, got = msg.partition(", got ")
        return where, f"expected {exp[len('Expected '):].strip('`')}, found {got.strip('`')}"
    if msg.startswith("Object missing required field `"):
        name = msg.split("`")[1]
        struct = _struct_at(typ, rest)
        shown = _field_type(struct, name) if struct is not None else "a value"
        return f"{where}.{name}", f"required field is missing: expected {shown}, found nothing"
    if msg.startswith("Object contains unknown field `"):
        name = msg.split("`")[1]
        struct = _struct_at(typ, rest)
        if struct is None:
            return f"{where}.{name}", "unknown field"
        hint = did_you_mean(name, struct.__struct_fields__)
        known = ", ".join(sorted(struct.__struct_fields__))
        return f"{where}.{name}", f"unknown setting{hint}: expected one of {known}"
    return where, msg[:1].lower() + msg[1:]


def kind_of(value: Any) -> str:
    """A decoded value's type in JSON words, for "found ..." in messages."""
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number"}.get(type(value), type(value).__name__)
