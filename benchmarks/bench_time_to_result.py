"""Time to result: cumulative seconds from the first call to the N-th, every framework.

    python benchmarks/bench_time_to_result.py [--quick] [--programs seed_mlp,rnn25]
                                              [--dtypes float64,float32] [--limit 30]
                                              [--no-frameworks] [--interpreted-only]

A user decorates NumPy code and calls it N times: what does it cost, all in,
against the same maths written by hand in NumPy and against JAX `jit`,
PyTorch eager and TensorFlow `tf.function` (each when installed)? Every column
is its own fresh process; imports (and the data) come before the clock starts,
tracing and compiling are on it. tracejit "cold" starts from an empty
TRACEJIT_CACHE_DIR (and NUMBA_CACHE_DIR) on a machine where tracejit ran
before: the runtime helpers, the same for every program, are in their own
cache (TRACEJIT_RUNTIME_CACHE_DIR, filled first; `--first-on-machine` leaves
it empty); "warm" is a new process on the cache the cold one filled. A column
stops at the first checkpoint past `--limit` seconds.

Also printed: the interpreted tier's µs per call while the kernel compiles
and the kernel-ready time (cold, warm), from the same processes; the
interpreted tier in steady state (TRACEJIT_DISABLE_JIT=1) against hand NumPy
in one process, interleaved, in CPU time (robust to a shared machine); and
the seed programs' equation counts before and after the algebraic simplifier.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    FirstCallError,
    fill_runtime_cache,
    fmt_ratio,
    markdown_table,
    run_first_call,
    thread_env,
)

CHECKPOINTS = (1, 10, 100, 1_000, 3_000, 10_000, 30_000, 100_000)
QUICK_CHECKPOINTS = (1, 10, 100, 1_000, 3_000)

# name -> (description, loss and data maker, hand value-and-grad), all in programs_setup
PROGRAMS = {
    "seed_mlp": "seeds' MLP (batch 32, 10->5 relu->2, softmax CE)",
    "mlp16": "MLP, 16 tanh layers of 64, batch 32 (MSE)",
    "rnn25": "char-RNN, 25 steps of a Python loop (vocab 30, hidden 64)",
    "mlp_medium": "mlp-medium (batch 128, 784->256 relu->10, softmax CE)",
}
QUICK_PROGRAMS = ("seed_mlp", "rnn25")

# Runs in every child before the clock: `problem(name, dtype, xp)` -> (loss, args, hand).
PROBLEMS = """
import numpy as np
import compile_programs as cp
import workloads as wl

def cast(tree, dtype):
    if isinstance(tree, (tuple, list)):
        return type(tree)(cast(t, dtype) for t in tree)
    if isinstance(tree, np.ndarray) and tree.dtype.kind == "f":
        return tree.astype(dtype)
    return tree

def problem(name, dtype, xp=np):
    if name == "seed_mlp":
        params, data = wl.mlp_data(32, 10, 5, 2, dtype, 0)
        return cp.seed_mlp_loss(xp), (params, *data), wl.numpy_mlp_value_and_grad
    if name == "mlp_medium":
        params, data = wl.mlp_data(128, 784, 256, 10, dtype, 0)
        return cp.seed_mlp_loss(xp), (params, *data), wl.numpy_mlp_value_and_grad
    if name == "mlp16":
        return cp.mlp_loss(xp), cast(cp.mlp_data(16), dtype), cp.hand_mlp_value_and_grad
    if name == "rnn25":
        return cp.rnn_loss(xp), cast(cp.rnn_data(25), dtype), cp.hand_rnn_value_and_grad
    raise KeyError(name)
"""

# The timed loop, shared by every column: `call()` once per step; `ready()` (if not
# None) says whether the fast tier serves calls yet, polled every 8 calls until it does.
LOOP = """
import time
ready_at = None
n = 0
start = time.perf_counter()
for target in CHECKPOINTS:
    while n < target:
        call()
        n += 1
        if n == 1:
            first_s = time.perf_counter() - start
            mark("first", first_s)
        if ready is not None and ready_at is None and n % 8 == 0 and ready():
            ready_at = (n, time.perf_counter() - start)
    elapsed = time.perf_counter() - start
    mark(f"n{target}", elapsed)
    if elapsed > LIMIT:
        break
if ready_at is not None:
    mark("ready_calls", ready_at[0])
    mark("ready_s", ready_at[1])
# the interpreted calls: those before the kernel took over (all of them if it never did)
served, until = ready_at if ready_at is not None else (n, elapsed)
if ready is not None and served > 1:
    mark("interp_us", (until - first_s) / (served - 1) * 1e6)
"""

SETUPS = {
    "numpy": "loss, args, hand = problem(NAME, DTYPE)\n"
             "call = lambda: hand(*args)\nready = None\n",
    "tracejit": "import tracejit\nloss, args, hand = problem(NAME, DTYPE)\n"
                "vg = tracejit.value_and_grad(loss)\ncall = lambda: vg(*args)\n"
                "def ready():\n"
                "    entry, _ = vg.entry(args)\n"
                "    return entry.kernel.fn is not None and entry.compiling is None\n",
    "jax": "import jax\njax.config.update('jax_enable_x64', True)\nimport jax.numpy as jnp\n"
           "loss, args, hand = problem(NAME, DTYPE, jnp)\n"
           "args = jax.tree_util.tree_map(jnp.asarray, args)\n"
           "vg = jax.jit(jax.value_and_grad(loss))\n"
           "call = lambda: jax.block_until_ready(vg(*args))\nready = None\n",
    "torch": "import torch\nfrom bench_time_to_result import torch_problem\n"
             "call = torch_problem(torch, *problem(NAME, DTYPE)[:2], NAME)\nready = None\n",
    "tf": "import os\nos.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')\n"
          "import tensorflow as tf\nfrom bench_time_to_result import tf_problem\n"
          "call = tf_problem(tf, *problem(NAME, DTYPE)[:2], NAME)\nready = None\n",
}
# After the clock: a cold process waits for its compile, so the warm one finds it on disk.
AFTERS = {"tracejit": "vg.wait()\n"}

MODULES = {"jax": "jax", "torch": "torch", "tf": "tensorflow"}


def run_column(framework, name, dtype, checkpoints, limit, env=None) -> dict:
    """One column's marks (seconds at each checkpoint, ready time...) from a fresh process."""
    head = (f"NAME, DTYPE, LIMIT = {name!r}, np.{dtype}, {limit!r}\n"
            f"CHECKPOINTS = {tuple(checkpoints)!r}\n")
    setup = PROBLEMS + head + SETUPS[framework]
    env = {**thread_env(1), **(env or {})}  # one BLAS thread everywhere: the machine is shared
    try:
        return run_first_call(LOOP, setup, AFTERS.get(framework, ""), env)["marks"]
    except FirstCallError as err:
        return {"error": str(err)[:120]}


def run_program(name, dtype, checkpoints, limit, frameworks, runtime_dir=None) -> dict:
    """Every column of one program: hand NumPy, tracejit cold and warm, the frameworks."""
    columns = {"numpy": run_column("numpy", name, dtype, checkpoints, limit)}
    with tempfile.TemporaryDirectory(prefix="tracejit-ttr-") as tmp:
        env = {"TRACEJIT_CACHE_DIR": os.path.join(tmp, "tracejit"),
               "TRACEJIT_RUNTIME_CACHE_DIR": runtime_dir or os.path.join(tmp, "runtime"),
               "NUMBA_CACHE_DIR": os.path.join(tmp, "numba")}
        for label in ("cold", "warm"):
            columns[f"tracejit {label}"] = run_column("tracejit", name, dtype, checkpoints,
                                                      limit, env)
    for framework in frameworks:
        columns[framework] = run_column(framework, name, dtype, checkpoints, limit)
    return columns


def installed_frameworks() -> list[str]:
    return [f for f, module in MODULES.items() if importlib.util.find_spec(module)]


def _seconds(marks: dict, n: int):
    return marks.get(f"n{n}")


def _cell(value) -> str:
    return "—" if value is None else f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _ratio(a, b) -> str:
    return "—" if a is None or not b else fmt_ratio(a / b)


def program_table(columns: dict, checkpoints) -> str:
    """Seconds to the N-th call per column; tracejit's ratio to hand NumPy and to the
    fastest framework (JAX, PyTorch, TensorFlow) at every N."""
    names = list(columns)
    frameworks = [c for c in names if c in MODULES]
    header = ["N", *names, "cold/NumPy", "warm/NumPy"]
    header += ["cold/best fw", "warm/best fw"] if frameworks else []
    rows = []
    for n in checkpoints:
        values = {c: _seconds(columns[c], n) for c in names}
        hand = values["numpy"]
        row = [f"{n:,}", *(_cell(values[c]) for c in names),
               _ratio(values["tracejit cold"], hand), _ratio(values["tracejit warm"], hand)]
        if frameworks:
            best = min((values[f] for f in frameworks if values[f] is not None), default=None)
            row += [_ratio(values["tracejit cold"], best), _ratio(values["tracejit warm"], best)]
        rows.append(row)
    return markdown_table(header, rows)


def tier_summary(columns: dict) -> str:
    """The interpreted tier while the kernel compiles, and when the kernel took over."""
    hand = columns["numpy"]
    hand_us = hand["n1000"] / 1000 * 1e6 if "n1000" in hand else None
    parts = []
    for label in ("cold", "warm"):
        marks = columns[f"tracejit {label}"]
        if "error" in marks:
            parts.append(f"{label}: {marks['error']}")
            continue
        interp = marks.get("interp_us")
        ready = (f"kernel ready at {_cell(marks['ready_s'])} s (call {marks['ready_calls']:,})"
                 if "ready_s" in marks else "kernel not serving by the last checkpoint")
        parts.append(f"{label}: interpreted {_cell(interp)} µs/call"
                     f" ({_ratio(interp, hand_us)}x hand), {ready}")
    errors = [f"{c}: {m['error']}" for c, m in columns.items()
              if "error" in m and "tracejit" not in c]
    return "; ".join(parts) + (f"; hand NumPy {hand_us:.1f} µs/call" if hand_us else "") + (
        "\n" + "\n".join(errors) if errors else "")


# ------------------------------------------------------ PyTorch and TensorFlow

def _framework_loss(xp, name, tanh, logsumexp, mlp):
    """A program's loss over framework `xp`'s tensors (`mlp`: its softmax-CE MLP)."""
    if name in ("seed_mlp", "mlp_medium"):
        return mlp

    def mlp16(params, x, y):
        h = x
        for W, b in params[:-1]:
            h = tanh(h @ W + b)
        W, b = params[-1]
        return xp.reduce_mean((h @ W + b - y) ** 2) if hasattr(xp, "reduce_mean") \
            else xp.mean((h @ W + b - y) ** 2)

    def rnn25(params, X, Y, h0):
        Wxh, Whh, Why, bh, by = params
        h, total = h0, 0.0
        for t in range(len(Y)):
            h = tanh(X[t:t + 1] @ Wxh + h @ Whh + bh)
            logits = (h @ Why + by)[0]
            total = total - (logits[int(Y[t])] - logsumexp(logits))
        return total / len(Y)

    return {"mlp16": mlp16, "rnn25": rnn25}[name]


def torch_problem(torch, loss, args, name):
    """PyTorch eager: `call()` returning the loss and the gradients (torch.autograd.grad)."""
    from frameworks import _torch_losses
    from workloads import tree_leaves, tree_unflatten

    params, *data = args
    loss = _framework_loss(torch, name, torch.tanh, lambda z: torch.logsumexp(z, 0),
                           _torch_losses(torch)["mlp"])
    leaves = [torch.from_numpy(np.array(p)).requires_grad_() for p in tree_leaves(params)]
    data = [d if d.dtype.kind == "i" else torch.from_numpy(d) for d in data]
    if name == "rnn25":
        data[2] = data[2][None]  # h0 as a row, as the time steps are

    def call():
        value = loss(tree_unflatten(params, leaves), *data)
        return value.detach(), torch.autograd.grad(value, leaves)

    return call


def tf_problem(tf, loss, args, name):
    """TensorFlow: a `tf.function` of the loss and its GradientTape gradients."""
    from frameworks import _tf_losses
    from workloads import tree_leaves, tree_unflatten

    params, *data = args
    loss = _framework_loss(tf, name, tf.tanh, tf.reduce_logsumexp, _tf_losses(tf)["mlp"])
    leaves = [tf.constant(p) for p in tree_leaves(params)]
    data = [d if d.dtype.kind == "i" else tf.constant(d) for d in data]
    if name == "rnn25":
        data[2] = data[2][None]

    @tf.function
    def step(leaves, *data):
        with tf.GradientTape() as tape:
            tape.watch(leaves)
            value = loss(tree_unflatten(params, leaves), *data)
        return value, tape.gradient(value, leaves)

    return lambda: step(leaves, *data)


# ----------------------------------------------------------------- seed programs

def seed_programs() -> dict:
    """The four seed programs (tests/test_seeds.py) as (loss of params first, arguments)."""
    rng = np.random.default_rng(3)
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0, 8.0])
    variables = [rng.uniform(-0.6, 0.6, (10, 5)), np.zeros(5), rng.uniform(-0.8, 0.8, (5, 2)),
                 np.zeros(2)]
    inputs, labels = rng.standard_normal((32, 10)), np.eye(2)[rng.integers(0, 2, 32)]

    def linear(params, x, y):
        W, b = params
        return np.mean(np.square(W * x + b - y))

    def scalar(params, x, y):
        w, b = params
        return np.square(y - (w * x + b))

    def dense_dense(params, inputs, labels):
        kernel1, bias1, kernel2, bias2 = params
        hidden = np.maximum(inputs @ kernel1 + bias1, 0.0)
        logits = hidden @ kernel2 + bias2
        shifted = logits - np.max(logits, axis=1, keepdims=True)
        log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
        return -np.mean(np.sum(labels * log_probs, axis=1))

    return {"000 linear model": (linear, ([np.array([0.5]), np.zeros(1)], x, y)),
            "001 scalar squared error": (scalar, ((0.5, 1.0), 2.0, 3.0)),
            "002 x**2": (lambda v: v ** 2, (3.0,)),
            "003 Keras MLP": (dense_dense, (variables, inputs, labels))}


# ----------------------------------------------------------- the interpreted tier alone

INTERPRETED = """
import time, tracejit
loss, args, hand = problem(NAME, DTYPE)
vg = tracejit.value_and_grad(loss)
calls = {"tracejit": vg, "hand": hand}
best = {name: float("inf") for name in calls}
for fn in calls.values():
    fn(*args)
for _ in range(ROUNDS):  # interleaved batches of ~20 ms; CPU seconds, the best batch
    for name, fn in calls.items():
        number = max(1, int(0.02 / min(best[name], 1e-3)))
        time.sleep(0.05)
        start = time.process_time()
        for _ in range(number):
            fn(*args)
        best[name] = min(best[name], (time.process_time() - start) / number)
mark("tracejit_us", best["tracejit"] * 1e6)
mark("hand_us", best["hand"] * 1e6)
"""


def interpreted_tier(name, dtype, rounds) -> dict:
    setup = PROBLEMS + f"NAME, DTYPE, ROUNDS = {name!r}, np.{dtype}, {rounds!r}\n"
    try:
        env = {**thread_env(1), "TRACEJIT_DISABLE_JIT": "1"}
        return run_first_call(INTERPRETED, setup, env=env)["marks"]
    except FirstCallError as err:
        return {"error": str(err)[:120]}


def interpreted_table(programs, dtypes, rounds) -> str:
    rows = []
    for name in programs:
        for dtype in dtypes:
            marks = interpreted_tier(name, dtype, rounds)
            if "error" in marks:
                rows.append([name, dtype, marks["error"], "", ""])
                continue
            rows.append([name, dtype, f"{marks['tracejit_us']:,.1f}", f"{marks['hand_us']:,.1f}",
                         fmt_ratio(marks["tracejit_us"] / marks["hand_us"])])
    return markdown_table(["program", "dtype", "interpreted µs", "hand NumPy µs", "ratio"],
                          rows, numeric_from=2)


# ------------------------------------------------------------ equation counts

COUNTS = """
import tracejit
from tracejit.transforms import passes
from bench_time_to_result import PROGRAMS, seed_programs
programs = dict(seed_programs())
programs.update((name, (lambda p: (p[0], p[1]))(problem(name, np.float64))) for name in PROGRAMS)
for label, (fn, args) in programs.items():
    program = tracejit.value_and_grad(fn).ir(*args)
    mark(label + " after", passes.equation_count(program))
    with passes.algebra_disabled():
        program = tracejit.value_and_grad(fn).ir(*args)
    mark(label + " before", passes.equation_count(program))
"""


def equation_table() -> str:
    """Equations of each value-and-grad program (loop bodies included) with and
    without the algebraic simplifier: the seeds (a test pins them), then the
    benchmark's programs."""
    try:
        marks = run_first_call(COUNTS, PROBLEMS, env={"TRACEJIT_DISABLE_JIT": "1"})["marks"]
    except FirstCallError as err:
        return f"equation counts: {err}"
    labels = dict.fromkeys(label.rsplit(" ", 1)[0] for label in marks)
    rows = [[label, f"{marks[label + ' before']}", f"{marks[label + ' after']}"]
            for label in labels]
    return markdown_table(["value-and-grad program", "equations before", "after"], rows)


# ---------------------------------------------------------- the interpreter's source

def print_source(name, dtype) -> None:
    """The Python function the interpreter serves a program's value and grad with
    (loop bodies written inline), to read next to the hand-written NumPy."""
    os.environ["TRACEJIT_DISABLE_JIT"] = "1"
    import tracejit
    from tracejit.backend import interpreter

    namespace: dict = {}
    exec(PROBLEMS, namespace)  # noqa: S102 - this file's own source
    loss, args, _ = namespace["problem"](name, getattr(np, dtype))
    entry, _ = tracejit.value_and_grad(loss).entry(args)
    source = interpreter.runner(entry.kernel.program).source
    steps = [line for line in source.splitlines()[1:]
             if not line.strip().startswith(("for ", "if ", "else", "return"))]
    print(f"## {PROGRAMS[name]}, {dtype}: {len(steps)} lines\n\n```python\n{source}```\n")


# ------------------------------------------------------------------------ main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer checkpoints and programs")
    parser.add_argument("--programs", help="comma-separated: " + ", ".join(PROGRAMS))
    parser.add_argument("--dtypes", help="comma-separated (default float64,float32)")
    parser.add_argument("--limit", type=float, default=30.0,
                        help="stop a column at the first checkpoint past this many seconds")
    parser.add_argument("--no-frameworks", action="store_true", help="NumPy and tracejit only")
    parser.add_argument("--first-on-machine", action="store_true",
                        help="tracejit cold with the runtime helpers' cache empty too")
    parser.add_argument("--interpreted-only", action="store_true",
                        help="only the equation counts and the interpreted tier's table")
    parser.add_argument("--source", action="store_true",
                        help="print the interpreter's source of each program, and stop")
    args = parser.parse_args(argv)
    checkpoints = QUICK_CHECKPOINTS if args.quick else CHECKPOINTS
    programs = (args.programs.split(",") if args.programs
                else QUICK_PROGRAMS if args.quick else tuple(PROGRAMS))
    dtypes = (args.dtypes.split(",") if args.dtypes
              else ("float64",) if args.quick else ("float64", "float32"))
    frameworks = [] if args.no_frameworks else installed_frameworks()
    if args.source:
        for name in programs:
            for dtype in dtypes:
                print_source(name, dtype)
        return 0
    print("# Time to result (seconds from the first call to the N-th, each column a fresh "
          "process)\n")
    print("frameworks installed: " + (", ".join(frameworks) or "none") + "\n")
    print(equation_table() + "\n", flush=True)
    runtime = tempfile.TemporaryDirectory(prefix="tracejit-runtime-")
    if not args.first_on_machine:
        fill_runtime_cache(runtime.name)
    for name in programs if not args.interpreted_only else ():
        for dtype in dtypes:
            columns = run_program(name, dtype, checkpoints, args.limit, frameworks,
                                  None if args.first_on_machine else runtime.name)
            print(f"## {PROGRAMS[name]}, {dtype}\n")
            print(program_table(columns, checkpoints))
            print("\n" + tier_summary(columns) + "\n", flush=True)
    print("## Interpreted tier, steady state (TRACEJIT_DISABLE_JIT=1; CPU µs per call, the "
          "best of interleaved batches with hand NumPy in one process)\n")
    print(interpreted_table(programs, dtypes, 10 if args.quick else 25), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
