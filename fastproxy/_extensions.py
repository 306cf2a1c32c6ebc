"""The hot modules compiled to C extensions, the switch that runs them interpreted, and the check
that a compiled package is whole and current.

The modules in ``COMPILED`` are plain typed Python; ``setup.py`` compiles each with Cython in
pure-Python mode, using the ``.pxd`` file beside it for the C types (cdef classes, cpdef methods).
Their ``.py`` file stays the only source: it runs as it is when the package runs interpreted.

* ``FASTPROXY_NO_EXTENSIONS=1`` (any value but empty or ``0``) makes ``fastproxy/__init__.py``
  put ``SourceOnlyFinder`` first on ``sys.meta_path``: every ``fastproxy.*`` module is then
  loaded from its ``.py`` even where a compiled ``.so`` sits beside it. Subprocesses inherit
  the variable, so they run interpreted too.
* ``build_mode()`` says which of the two the process runs: ``"compiled"`` only when every listed
  module was loaded from its extension and that extension was built from the ``.py`` and
  ``.pxd`` now on disk (``setup.py`` records the SHA-256 of both, and of the extension it built,
  in ``_extensions.json`` beside this file). Anything else (no extension, some modules compiled
  and others not, a source edited after the build, an extension swapped after it) raises
  ``BuildError`` naming the modules: ``fastproxy run`` refuses to start on it (fail closed).
  Content hashes, not mtimes, so an install that rewrites timestamps (a wheel) is not "stale"
  and a touched file is not "current".

This module must not import anything from fastproxy: ``setup.py`` loads it standalone.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Optional

#: The modules compiled to C extensions: the one list setup.py builds and build_mode() checks.
#: Each must have a ``.pxd`` beside its ``.py``.
COMPILED: tuple[str, ...] = (
    "fastproxy.limits.bucket",
    "fastproxy.breaker",
    "fastproxy.routing",
    "fastproxy.http.head",
    "fastproxy.http.wire",
    "fastproxy.http.upstream_head",
    "fastproxy.policies.chain",
    "fastproxy.server.flow",
    "fastproxy.server.exchange",
    "fastproxy.server.phases",
    "fastproxy.server.connection",
    "fastproxy.server.forward",
    "fastproxy.upstream.connection",
    "fastproxy.upstream.pool",
    "fastproxy.upstream.select",
    "fastproxy.metrics",
)

ENV = "FASTPROXY_NO_EXTENSIONS"
MANIFEST = "_extensions.json"  # beside this file, written by setup.py's build_ext
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class BuildError(RuntimeError):
    """The compiled package is not whole or not current; the message says what and how to fix it."""


def disabled() -> bool:
    """True when FASTPROXY_NO_EXTENSIONS asks for the interpreted package."""
    return os.environ.get(ENV, "") not in ("", "0")


def source_path(module: str, root: str = "") -> str:
    """``fastproxy.limits.bucket`` -> ``<root>/fastproxy/limits/bucket.py`` (root: the package's parent)."""
    return os.path.join(root or os.path.dirname(PACKAGE_DIR), *module.split(".")) + ".py"


def source_digest(py: str) -> str:
    """SHA-256 of a compiled module's sources: its ``.py`` and the ``.pxd`` beside it."""
    h = hashlib.sha256()
    for path in (py, py[:-3] + ".pxd"):
        with open(path, "rb") as f:
            data = f.read()
        h.update(b"%d:" % len(data))
        h.update(data)
    return h.hexdigest()


def file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def extension_path(py: str) -> Optional[str]:
    """The compiled extension beside ``py`` (``bucket.cpython-311-x86_64-linux-gnu.so``), if any."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = py[:-3] + suffix
        if os.path.isfile(path):
            return path
    return None


def _manifest(package_dir: str) -> dict[str, object]:
    try:
        with open(os.path.join(package_dir, MANIFEST)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def stale(modules: Sequence[str] = COMPILED, package_dir: str = PACKAGE_DIR) -> list[str]:
    """Why the extensions on disk do not match the sources (empty: all built and current).

    Files only, nothing imported: ``scripts/setup.sh`` rebuilds when this is not empty."""
    root = os.path.dirname(package_dir)
    manifest = _manifest(package_dir)
    reasons = []
    for name in modules:
        py = source_path(name, root)
        rel = os.path.relpath(py, root)
        ext = extension_path(py)
        entry = manifest.get(name)
        if ext is None:
            reasons.append(f"{rel}: no compiled extension beside it")
        elif not isinstance(entry, dict):
            reasons.append(f"{rel}: its extension is not in the build manifest {MANIFEST}")
        elif entry.get("source") != source_digest(py):
            reasons.append(f"{rel} or its .pxd changed since its extension was built")
        elif entry.get("ext") != file_digest(ext):
            reasons.append(f"{os.path.relpath(ext, root)} is not the extension the last build made")
    return reasons


def _is_extension(mod: ModuleType) -> bool:
    spec = getattr(mod, "__spec__", None)
    if isinstance(getattr(spec, "loader", None), importlib.machinery.ExtensionFileLoader):
        return True
    return str(getattr(mod, "__file__", "")).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


_FIX = ("rebuild with scripts/setup.sh (or `pip install -e .`), or run interpreted with "
        f"{ENV}=1")


def check_build(modules: Sequence[str] = COMPILED) -> str:
    """Import the hot modules and say how they run; raise BuildError on a partial or stale build."""
    loaded = {name: importlib.import_module(name) for name in modules}
    compiled = [name for name, mod in loaded.items() if _is_extension(mod)]
    if disabled():
        if compiled:  # only if something imported them before fastproxy/__init__ ran
            raise BuildError(f"{ENV} is set but {', '.join(compiled)} were loaded compiled")
        return "interpreted"
    interpreted = [name for name in modules if name not in compiled]
    if not compiled:
        raise BuildError(f"the C extensions of fastproxy are not built (none of {', '.join(modules)} "
                         f"is compiled): {_FIX}")
    if interpreted:
        raise BuildError(f"fastproxy is half-compiled: {', '.join(compiled)} compiled, "
                         f"{', '.join(interpreted)} not: {_FIX}")
    reasons = stale(modules)
    if reasons:
        raise BuildError(f"fastproxy's compiled build is stale: {'; '.join(reasons)}: {_FIX}")
    return "compiled"


_mode: Optional[str] = None


def build_mode() -> str:
    """``"compiled"`` or ``"interpreted"``: how this process runs the hot modules (cached once
    known); BuildError when the package is half-compiled or its extensions are stale."""
    global _mode
    if _mode is None:
        _mode = check_build()
    return _mode


class SourceOnlyFinder:
    """Meta-path finder that loads every ``fastproxy.*`` module from its ``.py`` source."""

    @classmethod
    def find_spec(cls, fullname: str, path: Optional[Sequence[str]] = None,
                  target: Optional[ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        if not fullname.startswith("fastproxy.") or not path:
            return None
        leaf = fullname.rpartition(".")[2]
        for entry in path:
            base = os.path.join(entry, leaf)
            init = os.path.join(base, "__init__.py")
            if os.path.isfile(init):
                return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[base])
            if os.path.isfile(base + ".py"):
                return importlib.util.spec_from_file_location(fullname, base + ".py")
        return None  # not a source module (the normal finders decide)


def install_source_only() -> None:
    if not any(f is SourceOnlyFinder for f in sys.meta_path):
        sys.meta_path.insert(0, SourceOnlyFinder)


def main() -> int:
    """For scripts/setup.sh: print why a rebuild is due, exit status 1 then (0: all current)."""
    why = stale()
    for line in why:
        print(line)
    return 1 if why else 0
