#!/usr/bin/env python3
"""test_fuzz: the libFuzzer harnesses of tests/fuzz/ as a regression test, the short variant of
`make fuzz` that CI runs.

Builds the harnesses if needed (`make fuzz-build`: clang, into build/fuzz/), then one test per
harness runs tests/fuzz/run.sh on it: every input of its committed corpus and every committed
crash reproducer (tests/fuzz/crashes/<target>/) once, then GPLQ_FUZZ_S seconds of fuzzing
(default 3) from a scratch copy of the corpus. A test passes when its harness did not crash.
Nine harnesses take about 30 s, the build (once) about 40 s on two cores.

Needs clang and its fuzzer runtime (scripts/install-deps.sh --fuzz; `make test-deps` installs
them). Run: /usr/bin/python3 tests/integration/test_fuzz.py [name-filter]
"""
import glob
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gplqd_harness import run_tests  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FUZZ_BUILD = os.path.join(ROOT, "build", "fuzz")
SECONDS = os.environ.get("GPLQ_FUZZ_S", "3")
TARGETS = sorted(os.path.basename(p)[len("fuzz_"):-2]
                 for p in glob.glob(os.path.join(ROOT, "tests", "fuzz", "fuzz_*.c")))
_built = []


def build():
    """make fuzz-build, once per run of this file; raises with make's output if it fails."""
    if _built:
        return
    if not shutil.which("clang"):
        raise AssertionError("clang is not installed: run scripts/install-deps.sh --fuzz")
    r = subprocess.run(["make", "-C", ROOT, "-j%d" % (os.cpu_count() or 1), "fuzz-build",
                        "FUZZ_BUILD=" + FUZZ_BUILD], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    assert r.returncode == 0, "make fuzz-build failed:\n" + r.stdout[-4000:]
    _built.append(True)


def fuzz(target):
    build()
    r = subprocess.run(["bash", os.path.join(ROOT, "tests", "fuzz", "run.sh"), "-s", SECONDS,
                        "-b", FUZZ_BUILD, target], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=600)
    print(r.stdout.rstrip(), flush=True)
    assert r.returncode == 0, "fuzz_%s crashed (above: the input and the stack)" % target


def _make_test(target):
    def test():
        fuzz(target)
    test.__name__ = "test_fuzz_" + target
    return test


for _t in TARGETS:
    globals()["test_fuzz_" + _t] = _make_test(_t)

if __name__ == "__main__":
    run_tests(globals())
