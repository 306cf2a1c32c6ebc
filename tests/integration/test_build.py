"""The compiled hot modules and their switch: FASTPROXY_NO_EXTENSIONS=1 runs the same package
interpreted, in subprocesses too; a half-compiled or stale package is named as such and
`fastproxy run` refuses to start on it (fail closed)."""

import os
import shutil
import subprocess
import sys

import pytest

import fastproxy
from fastproxy._extensions import COMPILED, ENV, extension_path, source_path
from tests.support import ROOT

MODE = "interpreted" if os.environ.get(ENV, "") not in ("", "0") else "compiled"


def _env(no_extensions: bool, pythonpath: str = ROOT) -> dict:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    env["PYTHONPATH"] = pythonpath
    if no_extensions:
        env[ENV] = "1"
    return env


def _python(args: list, no_extensions: bool, root: str = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=root, env=_env(no_extensions, root), capture_output=True,
                          text=True, timeout=60)


def test_this_process_runs_the_mode_its_environment_asks_for():
    assert fastproxy.build_mode() == MODE
    for name in COMPILED:
        __import__(name)
        assert sys.modules[name].__file__.endswith(".py") == (MODE == "interpreted"), sys.modules[name].__file__


@pytest.mark.parametrize("no_extensions", [False, True])
def test_the_switch_reaches_subprocesses_and_version_names_the_mode(no_extensions):
    mode = "interpreted" if no_extensions else "compiled"
    r = _python(["-m", "fastproxy", "version"], no_extensions)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert r.stdout.splitlines()[-1] == f"mode {mode}"
    code = ("import fastproxy, subprocess, sys; import fastproxy.routing as r; print(r.__file__); sys.stdout.flush(); "
            "subprocess.run([sys.executable, '-c', 'import fastproxy.breaker as b; print(b.__file__)'])")
    r = _python(["-c", code], no_extensions)
    files = r.stdout.split()
    assert len(files) == 2 and all(f.endswith(".py") == no_extensions for f in files), r.stdout + r.stderr


@pytest.fixture
def package_copy(tmp_path):
    """A copy of the package as built (extensions and build manifest included)."""
    for name in COMPILED:
        assert extension_path(source_path(name, ROOT)) is not None, f"{name} is not built: run scripts/setup.sh"
    shutil.copytree(os.path.join(ROOT, "fastproxy"), tmp_path / "fastproxy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return str(tmp_path)


def _refused(root: str, *fragments: str) -> None:
    r = _python(["-m", "fastproxy", "version"], False, root)
    assert r.returncode == 1 and r.stdout.splitlines()[-1].startswith("python "), r.stdout
    for fragment in fragments:
        assert fragment in r.stderr, r.stderr
    r = _python(["-m", "fastproxy", "run", "-c", os.path.join(root, "missing.json"), "-p", "0"], False, root)
    assert r.returncode == 1 and "ready" not in r.stdout
    assert r.stderr.startswith("fastproxy: ") and "FASTPROXY_NO_EXTENSIONS=1" in r.stderr, r.stderr
    for fragment in fragments:
        assert fragment in r.stderr, r.stderr
    # the switch still runs it, interpreted
    r = _python(["-m", "fastproxy", "version"], True, root)
    assert (r.returncode, r.stdout.splitlines()[-1]) == (0, "mode interpreted"), r.stderr


def test_a_copy_of_the_built_package_is_compiled(package_copy):
    r = _python(["-m", "fastproxy", "version"], False, package_copy)
    assert (r.returncode, r.stdout.splitlines()[-1]) == (0, "mode compiled"), r.stderr
    code = "import fastproxy.limits.bucket as b; print(b.__file__)"
    assert _python(["-c", code], False, package_copy).stdout.startswith(package_copy)


@pytest.mark.parametrize("suffix", [".py", ".pxd"])
def test_a_source_edited_after_the_build_is_a_stale_build(package_copy, suffix):
    path = os.path.join(package_copy, "fastproxy", "breaker" + suffix)
    with open(path, "a") as f:
        f.write("\n# edited\n")
    _refused(package_copy, "stale", "fastproxy/breaker.py or its .pxd changed since its extension was built")


def test_a_missing_extension_is_a_half_compiled_package(package_copy):
    os.remove(extension_path(source_path("fastproxy.routing", package_copy)))
    _refused(package_copy, "half-compiled", "fastproxy.routing not")


def test_no_extension_at_all_is_refused_too(package_copy):
    for name in COMPILED:
        os.remove(extension_path(source_path(name, package_copy)))
    _refused(package_copy, "not built")


def test_an_extension_the_build_did_not_make_is_refused(package_copy):
    os.remove(os.path.join(package_copy, "fastproxy", "_extensions.json"))
    _refused(package_copy, "not in the build manifest")
