"""The route table, compiled once at load.

Rules it keeps:
- Static paths are one dict lookup. Paths with `{param}` segments or a trailing `/*` go through a
  segment trie, where at each level a literal segment beats a parameter, and a parameter beats
  the catch-all, as gin's router (and so KrakenD) ranks them.
- Matching is on the raw (still percent-encoded) path: parameters are substituted into the
  backend's `url_pattern` exactly as received, so nothing is decoded and re-encoded on the way.
- A path that exists for other methods answers 405 with `Allow`; otherwise 404. A route for GET
  also answers HEAD.

The table knows nothing of sockets or of what a route carries: `add` takes any value.
"""

from typing import Any, Optional

NOT_FOUND = 0
METHOD_NOT_ALLOWED = 1


class PatternError(ValueError):
    pass


def parse_pattern(pattern: str) -> tuple[list[tuple[bool, str]], bool]:
    """Split `/a/{b}/*` into [(is_param, text)...] and a catch-all flag; raise PatternError."""
    if not pattern.startswith("/"):
        raise PatternError(f"must start with '/', found {pattern!r}")
    wildcard = False
    body = pattern[1:]
    if body == "*" or body.endswith("/*"):
        wildcard = True
        body = body[:-2] if body.endswith("/*") else ""
    segments: list[tuple[bool, str]] = []
    names: set[str] = set()
    for seg in body.split("/") if body else []:
        if seg.startswith("{") and seg.endswith("}") and len(seg) > 2:
            name = seg[1:-1]
            if not name.isidentifier():
                raise PatternError(f"parameter name {name!r} is not a valid identifier")
            if name in names:
                raise PatternError(f"parameter {{{name}}} appears twice")
            names.add(name)
            segments.append((True, name))
        elif "{" in seg or "}" in seg or "*" in seg:
            raise PatternError(f"segment {seg!r} mixes literal text with '{{', '}}' or '*'")
        else:
            segments.append((False, seg))
    return segments, wildcard


class _Node:
    __slots__ = ("literal", "param", "param_name", "methods", "wild")

    def __init__(self) -> None:
        self.literal: dict[bytes, _Node] = {}
        self.param: Optional[_Node] = None
        self.param_name: Optional[str] = None
        self.methods: Optional[dict[bytes, Any]] = None  # route ends here
        self.wild: Optional[dict[bytes, Any]] = None  # route ends with /* here


class RouteTable:
    __slots__ = ("static", "root", "_names")

    def __init__(self) -> None:
        self.static: dict[bytes, dict[bytes, Any]] = {}
        self.root = _Node()
        self._names: dict[int, tuple[str, ...]] = {}

    def add(self, pattern: str, method: str, value: Any) -> None:
        """Register `value` for (method, pattern); raise PatternError on a bad or duplicate route."""
        segments, wildcard = parse_pattern(pattern)
        m = method.upper().encode()
        methods = [m, b"HEAD"] if m == b"GET" else [m]
        if not wildcard and not any(is_param for is_param, _ in segments):
            table = self.static.setdefault(pattern.encode(), {})
            self._put(table, methods, pattern, method)
            for name in methods:
                table.setdefault(name, value)
            return
        node = self.root
        for is_param, text in segments:
            if is_param:
                if node.param is None:
                    node.param = _Node()
                    node.param_name = text
                elif node.param_name != text:
                    raise PatternError(
                        f"parameter {{{text}}} conflicts with {{{node.param_name}}} at the same position of another endpoint")
                node = node.param
            else:
                node = node.literal.setdefault(text.encode(), _Node())
        if wildcard:
            if node.wild is None:
                node.wild = {}
            table = node.wild
        else:
            if node.methods is None:
                node.methods = {}
            table = node.methods
        self._put(table, methods, pattern, method)
        for name in methods:
            table.setdefault(name, value)

    @staticmethod
    def _put(table: dict, methods: list, pattern: str, method: str) -> None:
        if methods[0] in table:
            raise PatternError(f"{method.upper()} {pattern} is defined twice")

    def match(self, method: bytes, path: bytes):
        """Return (value, params, rest) or (NOT_FOUND | METHOD_NOT_ALLOWED, allowed_methods, None).

        `params` maps names to raw bytes; `rest` is the catch-all remainder (bytes, no leading
        slash) or None.
        """
        table = self.static.get(path)
        if table is not None:
            value = table.get(method)
            if value is not None:
                return value, None, None
            found = self._walk(self.root, path.split(b"/")[1:], 0, {}, method)
            if found is not None and found[0] is not METHOD_NOT_ALLOWED:
                return found
            return METHOD_NOT_ALLOWED, table, None
        found = self._walk(self.root, path.split(b"/")[1:], 0, {}, method)
        if found is None:
            return NOT_FOUND, None, None
        return found

    def _walk(self, node: _Node, segs: list, i: int, params: dict, method: bytes):
        if i == len(segs):
            if node.methods is not None:
                value = node.methods.get(method)
                if value is not None:
                    return value, params, None
                return METHOD_NOT_ALLOWED, node.methods, None
            if node.wild is not None:
                return self._wild(node.wild, method, params, b"")
            return None
        seg = segs[i]
        child = node.literal.get(seg)
        if child is not None:
            found = self._walk(child, segs, i + 1, params, method)
            if found is not None:
                return found
        if node.param is not None and seg:
            found = self._walk(node.param, segs, i + 1, {**params, node.param_name: seg}, method)
            if found is not None:
                return found
        if node.wild is not None:
            return self._wild(node.wild, method, params, b"/".join(segs[i:]))
        return None

    @staticmethod
    def _wild(table: dict, method: bytes, params: dict, rest: bytes):
        value = table.get(method)
        if value is not None:
            return value, params, rest
        return METHOD_NOT_ALLOWED, table, None
