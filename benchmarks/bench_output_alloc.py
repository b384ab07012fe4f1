"""Where a kernel's big output comes from, and what it costs per call.

    python benchmarks/bench_output_alloc.py [--repeats 15]

One kernel, `a[:, :, None] * b[:, None, :]` for a (128, 784) and b (128, 256) float64
(205 MB out: the per-example weight gradients of mlp-medium), timed in a fresh process per
way of allocating its output, since some of them change the whole process:
- pool: tracejit's buffer pool (default), the block of the previous call reused, faulted;
- pool off, NumPy hugepages: `TRACEJIT_BUFFER_POOL_MB=0`, a fresh NumPy block per call,
  which NumPy backs with transparent huge pages (madvise(MADV_HUGEPAGE));
- pool off, 4 KiB pages: the same with NumPy's hugepage advice off (what malloc gives
  any other allocation of this size: mmap, 4 KiB faults, unmapped again on free);
- pool off, mallopt: glibc's mmap and trim thresholds raised with mallopt for the whole
  process (as MALLOC_MMAP_THRESHOLD_ would), so freed blocks stay in the heap.
Also the floor: the same bytes written into pre-faulted memory by memset (ndarray.fill).
Prints the minimum and median of the timed calls (milliseconds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

_CHILD = r"""
import ctypes, json, sys, time
import numpy as np
mode, repeats = sys.argv[1], int(sys.argv[2])
if mode == "pool off, 4 KiB pages":
    np._core.multiarray._set_madvise_hugepage(False)
if mode == "pool off, mallopt":
    libc = ctypes.CDLL(None)
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    assert libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1
    assert libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1) == 1
import tracejit

rng = np.random.default_rng(0)
a, b = rng.standard_normal((128, 784)), rng.standard_normal((128, 256))
if mode == "memset floor":
    buf = np.zeros(128 * 784 * 256)
    call = lambda: buf.fill(1.0)
else:
    fn = tracejit.function(lambda a, b: a[:, :, None] * b[:, None, :])
    assert np.array_equal(fn(a, b), a[:, :, None] * b[:, None, :])
    call = lambda: fn(a, b)
call()
times = []
for _ in range(repeats):
    time.sleep(0.2)
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
print("@@" + json.dumps(times))
"""

MODES = ("pool", "pool off, NumPy hugepages", "pool off, 4 KiB pages", "pool off, mallopt",
         "memset floor")


def run(mode: str, repeats: int, cache: str) -> list[float]:
    env = {**os.environ, "TRACEJIT_CACHE_DIR": cache, "TRACEJIT_COMPILE": "sync",
           "OPENBLAS_NUM_THREADS": "1"}
    if mode.startswith("pool off"):
        env["TRACEJIT_BUFFER_POOL_MB"] = "0"
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(here), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(repeats)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(next(line[2:] for line in out.splitlines() if line.startswith("@@")))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f}\n")
    print("| output from | min ms | median ms |\n| --- | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="tracejit-alloc-") as cache:
        for mode in MODES:
            times = sorted(run(mode, args.repeats, cache))
            print(f"| {mode} | {1e3 * times[0]:.1f} | {1e3 * times[len(times) // 2]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
