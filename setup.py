"""Compiles fastproxy's hot modules to C extensions with Cython (pure-Python mode).

The list is ``COMPILED`` in fastproxy/_extensions.py; each module is its plain ``.py`` plus the
``.pxd`` beside it that declares the C types. Everything else about the package is in
pyproject.toml. ``pip install .`` builds them into the wheel; ``pip install -e .`` (and
``python setup.py build_ext --inplace``, which scripts/setup.sh runs when a source changed) builds
them beside their sources. A module that does not compile stops the install with the compiler's
error: there is no fallback to the interpreted module (FASTPROXY_NO_EXTENSIONS=1 is the explicit
way to run interpreted).

After a build, ``fastproxy/_extensions.json`` records for each module the SHA-256 of the sources it
was built from and of the extension made, so that ``fastproxy.build_mode()`` can tell a stale or
partial build from a current one.
"""

import importlib.util
import json
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))

_spec = importlib.util.spec_from_file_location("_fastproxy_extensions",
                                               os.path.join(HERE, "fastproxy", "_extensions.py"))
assert _spec is not None and _spec.loader is not None
ext_info = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ext_info)

# Cython directives for every compiled module. The .pxd is the only source of C types:
# annotation_typing is off, so the Python annotations (which others keep extending for mypy)
# never change what the compiled code accepts. No cdivision: a zero divisor still raises.
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": True,  # a negative index means what it means in Python (no per-site audit needed)
    "annotation_typing": False,
    "embedsignature": False,
    "initializedcheck": False,
}


def _extensions() -> list:
    """One Extension per listed module, its source the .py (cythonized when build_ext runs)."""
    exts = []
    for name in ext_info.COMPILED:
        py = os.path.relpath(ext_info.source_path(name, HERE), HERE)
        for path in (py, py[:-3] + ".pxd"):
            if not os.path.isfile(os.path.join(HERE, path)):
                sys.exit(f"fastproxy: {name} is listed in COMPILED (fastproxy/_extensions.py) but {path} is missing")
        exts.append(Extension(name, [py], extra_compile_args=["-O2"]))
    return exts


class BuildExt(build_ext):
    """build_ext that always recompiles and then writes the build manifest beside the package."""

    def finalize_options(self) -> None:
        try:
            from Cython.Build import cythonize
        except ImportError as exc:
            sys.exit(f"fastproxy: building the C extensions needs Cython 3.1 ([build-system] requires in "
                     f"pyproject.toml, or `pip install 'Cython>=3.1,<3.2'`): {exc}")
        # force: every build regenerates the C from the sources on disk, so the manifest written
        # after it is true whatever the timestamps of older .c files say
        self.distribution.ext_modules = cythonize(self.distribution.ext_modules, compiler_directives=DIRECTIVES,
                                                  build_dir="build/cython", force=True, quiet=True)
        super().finalize_options()
        self.force = True

    def run(self) -> None:
        super().run()
        # The extensions are in build_lib (packed into the wheel); with --inplace or an editable
        # install they were also copied beside their sources.
        self._manifest(os.path.join(self.build_lib, "fastproxy"), self.build_lib)
        if self.inplace or getattr(self, "editable_mode", False):
            self._manifest(os.path.join(HERE, "fastproxy"), HERE)

    def _manifest(self, package_dir: str, root: str) -> None:
        entries = {}
        for ext in self.extensions:
            ext_path = os.path.join(root, self.get_ext_filename(ext.name))
            if not os.path.isfile(ext_path):
                return  # not where this build put them (e.g. not in place): nothing to record there
            entries[ext.name] = {
                "source": ext_info.source_digest(ext_info.source_path(ext.name, HERE)),
                "ext": ext_info.file_digest(ext_path),
            }
        with open(os.path.join(package_dir, ext_info.MANIFEST), "w") as f:
            json.dump(entries, f, indent=1, sort_keys=True)
            f.write("\n")

    def get_outputs(self) -> list:
        return [*super().get_outputs(), os.path.join(self.build_lib, "fastproxy", ext_info.MANIFEST)]


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
