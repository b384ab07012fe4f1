"""Many crash trials against the kernel cache (the tests run a few of each).

    python benchmarks/crash_trials.py --damage 40 --kill-rounds 10 --procs 3

Each trial runs child processes (tests/fault_harness.py) on a cache directory
that is damaged (random bytes flipped, truncated, emptied, garbage, swapped
between kernels, malicious pickles planted), or kills cold children with
SIGKILL at random moments (half of them inside a file write), or runs several
cold children at once. A trial survives when every child exits normally with
NumPy's results and nothing planted ran. Prints one line per kind of trial.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fault_harness as h  # noqa: E402

KINDS = ("py", "nbi", "nbc", "key")
HOWS = ("flip", "truncate", "empty", "garbage")


def damage_trial(warm: Path, work: Path, rng: random.Random) -> str:
    cache = h.copy_cache(warm, work / "cache")
    what = rng.choice(["damage", "damage", "swap", "plant"])
    if what == "swap":
        suffix = rng.choice(["nbi", "nbc", "py"])
        first, second = (h.kernel_files(cache, k, suffix) for k in ("a", "b"))
        for one, other in zip(first, second):
            h.swap(one, other)
    elif what == "plant":
        h.plant(cache, work / "marker")
    else:
        files = [cache / ".tracejit-key", *cache.glob("*.py"), *h.numba_files(cache, "nbi"),
                 *h.numba_files(cache, "nbc")]
        for path in rng.sample(files, rng.randint(1, 4)):
            h.damage(path, rng.choice(HOWS), rng)
    h.run_child(cache)
    h.run_child(cache)  # and the directory the first child repaired
    if (work / "marker").exists():
        raise AssertionError("planted code ran")
    return what


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--damage", type=int, default=20, help="damage/swap/plant trials")
    parser.add_argument("--kill-rounds", type=int, default=5)
    parser.add_argument("--procs", type=int, default=3, help="children per kill round")
    parser.add_argument("--concurrent", type=int, default=3, help="cold children at once")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="tracejit-crash-") as tmp:
        root = Path(tmp)
        warm = root / "warm"
        h.warm_cache(warm)
        counts: dict[str, list[int]] = {}
        start = time.perf_counter()
        for k in range(args.damage):
            work = root / f"trial{k}"
            work.mkdir()
            try:
                kind = damage_trial(warm, work, rng)
                counts.setdefault(kind, [0, 0])[0] += 1
            except AssertionError as err:
                counts.setdefault("FAILED", [0, 0])[1] += 1
                print(f"trial {k} failed: {err}", file=sys.stderr)
        kills = h.kill_trials(root / "killed", args.kill_rounds, args.procs, seed=args.seed)
        h.finish(h.start_child(h.child_env(root / "killed")))
        concurrent = [h.start_child(h.child_env(root / "concurrent"))
                      for _ in range(args.concurrent)]
        for proc in concurrent:
            h.finish(proc)
        elapsed = time.perf_counter() - start
    print(f"{'trial':<28}{'run':>6}{'survived':>10}")
    for kind, (ok, failed) in sorted(counts.items()):
        print(f"{kind:<28}{ok + failed:>6}{ok:>10}")
    print(f"{'kill -9 rounds':<28}{kills['rounds']:>6}{kills['verified']:>10}"
          f"   ({kills['killed']} children killed)")
    print(f"{'concurrent cold children':<28}{args.concurrent:>6}{args.concurrent:>10}")
    print(f"total {elapsed:.0f} s")


if __name__ == "__main__":
    main()
