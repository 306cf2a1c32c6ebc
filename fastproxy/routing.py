"""The route table, compiled once at load.

Rules it keeps:
- Static paths are one dict lookup. Paths with `{param}` segments or a trailing `/*` go through a
  segment trie, where at each level a literal segment beats a parameter, and a parameter beats
  the catch-all, as gin's router (and so KrakenD) ranks them.
- Matching is on the raw (still percent-encoded) path: parameters are substituted into the
  backend's `url_pattern` exactly as received, so nothing is decoded and re-encoded on the way.
- A path that exists for other methods answers 405 with `Allow` (the methods of every route
  that matches the path, static, parameter or catch-all); otherwise 404. A route for GET also
  answers HEAD, unless an endpoint declares HEAD itself, which then wins whatever the order.
- A method that a literal route lacks falls through to a parameter or catch-all route for the
  same path that has it (`GET /users/me` and `POST /users/{id}` both serve `/users/me`).

The table knows nothing of sockets or of what a route carries: `add` takes any value.
"""

from typing import Any, Optional

NOT_FOUND = 0
METHOD_NOT_ALLOWED = 1

Params = dict[str, bytes]  # parameter name -> the raw segment
# A match: (value, params or None, rest) on a hit; (NOT_FOUND, None, None);
# (METHOD_NOT_ALLOWED, {method: value} of the path's routes, None).
Match = tuple[Any, Optional[Params | dict[bytes, Any]], Optional[bytes]]


class PatternError(ValueError):
    pass


def parse_pattern(pattern: str) -> tuple[list[tuple[bool, str]], bool]:
    """Split `/a/{b}/*` into [(is_param, text)...] and a catch-all flag; raise PatternError."""
    if not pattern.startswith("/"):
        raise PatternError(f"expected a path starting with '/', found {pattern!r}")
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
                raise PatternError(
                    "expected a parameter name of letters, digits and '_' (not starting with a digit), "
                    f"found {{{name}}}")
            if name in names:
                raise PatternError(f"expected distinct parameter names, found {{{name}}} twice in {pattern!r}")
            names.add(name)
            segments.append((True, name))
        elif seg == "*":
            raise PatternError(f"expected '*' only as the last segment ('/*'), found it in the middle of {pattern!r}")
        elif "{" in seg or "}" in seg or "*" in seg:
            raise PatternError(
                f"expected a literal segment or a whole '{{param}}' segment, found {seg!r} in {pattern!r}")
        else:
            segments.append((False, seg))
    return segments, wildcard


class _Node:
    __slots__ = ("literal", "param", "param_name", "methods", "wild")

    def __init__(self) -> None:
        self.literal: dict[bytes, _Node] = {}
        self.param: Optional[_Node] = None
        self.param_name = ""  # set with param
        self.methods: Optional[dict[bytes, Any]] = None  # route ends here
        self.wild: Optional[dict[bytes, Any]] = None  # route ends with /* here


class RouteTable:
    __slots__ = ("static", "root", "_implicit_head")

    def __init__(self) -> None:
        self.static: dict[bytes, dict[bytes, Any]] = {}
        self.root = _Node()
        self._implicit_head: set[int] = set()  # id() of method tables whose HEAD comes from GET

    def add(self, pattern: str, method: str, value: Any) -> None:
        """Register `value` for (method, pattern); raise PatternError on a bad or duplicate route."""
        segments, wildcard = parse_pattern(pattern)
        m = method.upper().encode()
        if not wildcard and not any(is_param for is_param, _ in segments):
            self._insert(self.static.setdefault(pattern.encode(), {}), m, pattern, value)
            return
        node = self.root
        for is_param, text in segments:
            if is_param:
                if node.param is None:
                    node.param = _Node()
                    node.param_name = text
                elif node.param_name != text:
                    raise PatternError(
                        f"parameter {{{text}}} conflicts with {{{node.param_name}}} at the same position of another "
                        f"endpoint: expected the same name there, found a different one")
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
        self._insert(table, m, pattern, value)

    def _insert(self, table: dict[bytes, Any], m: bytes, pattern: str, value: Any) -> None:
        implicit = id(table) in self._implicit_head
        if m in table and not (m == b"HEAD" and implicit):
            raise PatternError(f"{m.decode()} {pattern} is defined twice")
        table[m] = value
        if m == b"HEAD":
            self._implicit_head.discard(id(table))
        elif m == b"GET" and b"HEAD" not in table:
            table[b"HEAD"] = value
            self._implicit_head.add(id(table))

    def match(self, method: bytes, path: bytes) -> Match:
        """Return (value, params, rest) or (NOT_FOUND | METHOD_NOT_ALLOWED, allowed_methods, None).

        `params` maps names to raw bytes; `rest` is the catch-all remainder (bytes, no leading
        slash) or None. `allowed_methods` is a dict whose keys are the methods the path has.
        """
        table = self.static.get(path)
        if table is not None:
            value = table.get(method)
            if value is not None:
                return value, None, None
        refused: list[dict[bytes, Any]] = []  # method tables of routes that match the path but not the method
        found = self._walk(self.root, path.split(b"/")[1:], 0, {}, method, refused)
        if found is not None:
            return found
        if table is None and not refused:
            return NOT_FOUND, None, None
        allowed: dict[bytes, Any] = dict(table) if table is not None else {}
        for t in refused:
            for name, v in t.items():
                allowed.setdefault(name, v)
        return METHOD_NOT_ALLOWED, allowed, None

    def _walk(self, node: _Node, segs: list[bytes], i: int, params: Params, method: bytes,
              refused: list[dict[bytes, Any]]) -> Optional[tuple[Any, Params, Optional[bytes]]]:
        if i == len(segs):
            if node.methods is not None:
                value = node.methods.get(method)
                if value is not None:
                    return value, params, None
                refused.append(node.methods)
            if node.wild is not None:
                value = node.wild.get(method)
                if value is not None:
                    return value, params, b""
                refused.append(node.wild)
            return None
        seg = segs[i]
        child = node.literal.get(seg)
        if child is not None:
            found = self._walk(child, segs, i + 1, params, method, refused)
            if found is not None:
                return found
        if node.param is not None and seg:
            found = self._walk(node.param, segs, i + 1, {**params, node.param_name: seg}, method, refused)
            if found is not None:
                return found
        if node.wild is not None:
            value = node.wild.get(method)
            if value is not None:
                return value, params, b"/".join(segs[i:])
            refused.append(node.wild)
        return None
