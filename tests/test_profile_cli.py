"""The command line in fresh processes: `python -m tracejit profile` (table,
JSON, timeline, plot, exit status, the compile log) with the kernel compiled,
then loaded from the disk cache; and `python -m tracejit demo`."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tracejit

    @tracejit.function
    def predict(x, w):
        return np.tanh(x @ w).sum(axis=1)

    x, w = np.ones((4, 3)), np.full((3, 2), 0.5)
    for _ in range(int(sys.argv[1])):
        predict(x, w)
    print("script done", sys.argv[1:])
    sys.exit(int(sys.argv[2]))
""")


def run(args, cache_dir, **env):
    environment = {**os.environ, "TRACEJIT_CACHE_DIR": str(cache_dir),
                   "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    environment.pop("TRACEJIT_DISABLE_JIT", None)
    environment.update(env)
    return subprocess.run([sys.executable, "-m", "tracejit", *args], env=environment,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same script twice: the first process compiles, the second loads from disk."""
    tmp = tmp_path_factory.mktemp("profile-cli")
    script = tmp / "script.py"
    script.write_text(SCRIPT)
    results = []
    for k in range(2):
        out = tmp / f"run{k}"
        args = ["profile", "--json", f"{out}.json", "--trace", f"{out}.trace.json"]
        args += ["--plot", f"{out}.png"] if k else []
        proc = run([*args, str(script), "20", "3"], tmp / "cache", TRACEJIT_COMPILE="sync",
                   TRACEJIT_LOG_COMPILES="1")
        results.append((proc, json.loads((tmp / f"run{k}.json").read_text()), out))
    return results


def test_the_script_runs_with_its_arguments_and_exit_status(runs):
    for proc, _, _ in runs:
        assert proc.returncode == 3, proc.stderr
        assert "script done ['20', '3']" in proc.stdout


def test_the_table_is_printed_at_exit(runs):
    proc, _, _ = runs[0]
    table = proc.stdout.split("script done", 1)[1]
    assert "calls interp/kernel" in table and "break-even" in table
    (row,) = [line for line in table.splitlines() if line.startswith("predict ")]
    assert "0/20" in row and "(fresh)" in row


def test_json_counts_and_cache_sources(runs):
    (first,), (second,) = (d["reports"] for _, d, _ in runs)
    for report in (first, second):
        assert report["function"] == "predict" and report["traces"] == 1
        assert (report["interpreted_calls"], report["kernel_calls"]) == (0, 20)
        assert report["speedup"] > 0 and report["eager_us"] > 0
    assert (first["source"], first["compiles"], first["disk_loads"]) == ("fresh", 1, 0)
    assert (second["source"], second["compiles"], second["disk_loads"]) == ("disk", 0, 1)
    assert second["numba_phases_s"] == {}  # Numba keeps no phase times for cached code


def test_compile_log_on_stderr(runs):
    first, second = (proc.stderr for proc, _, _ in runs)
    assert "tracejit: trace predict(f64[4,3], f64[3,2]): first call" in first
    assert "tracejit: compile predict: compiled by Numba in" in first
    assert "tracejit: compile predict: loaded from Numba's disk cache in" in second


def test_timeline_and_plot_files(runs):
    for _, _, out in runs:
        events = json.loads(open(f"{out}.trace.json").read())["traceEvents"]
        assert {"trace", "compile", "kernel"} <= {e.get("cat") for e in events}
    pytest.importorskip("matplotlib")
    with open(f"{runs[1][2]}.png", "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"


def test_demo(tmp_path):
    # The README's first command. Its kernels compile in other tests; here the interpreter
    # serves every call, which keeps this test fast and the printed numbers the same.
    proc = run(["demo"], tmp_path / "cache", TRACEJIT_DISABLE_JIT="1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "d(x**2)/dx at 3.0 = 6.0" in out
    assert "dL/dw = -4.0, dL/db = -2.0" in out
    assert "linear model: loss = 16.8750, dL/dW = [-22.5], dL/db = [-7.5]" in out
    assert "largest gradient difference" in out and "tracejit profile" in out
    assert "mlp_loss_value_and_grad" in out and "(interpreter)" in out
