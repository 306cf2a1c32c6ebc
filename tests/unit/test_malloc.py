"""The worker's glibc malloc settings (`fastproxy.server.malloc`): large buffers freed and
allocated again, as a streamed body does on every read, must not fault fresh pages in each time."""

import subprocess
import sys

from fastproxy.server import malloc

PATTERN = """
import resource, sys
from fastproxy.server import malloc
if sys.argv[1] == "tuned":
    assert malloc.tune({})
keep = []
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(2000):  # a few 200-250 KB buffers alive at once, freed in varying order
    keep.append(bytes(200_000 + (i % 7) * 8192))
    if len(keep) > 3:
        keep.pop(i % 3)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 2000)
"""


def faults_per_buffer(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", PATTERN, mode], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"})
    return float(out.stdout)


def test_tuned_heap_reuses_large_buffers_without_faulting_pages_in():
    assert faults_per_buffer("tuned") < 1.0


def test_glibc_defaults_fault_pages_in_for_the_same_pattern():
    # what tune() is for: if glibc ever stops doing this, the tuning can go
    assert faults_per_buffer("default") > 2.0


def test_operator_malloc_settings_are_left_alone():
    assert malloc.tune({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}) is False
    assert malloc.tune({"MALLOC_TRIM_THRESHOLD_": "1"}) is False
