"""The examples run and print what their seeds print (examples/seed_*.py
through the interpreter, the digits MLP compiled, trained to >= 96%)."""

import pathlib
import runpy
import threading
import warnings

import numpy as np
import pytest

from tracejit.backend.compiler import BACKGROUND_COMPILE, TracejitCompileWarning

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def run(name: str, capsys) -> tuple[dict, str]:
    namespace = runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return namespace, capsys.readouterr().out


def printed(output: str, label: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(label))[len(label):]


def test_seed_000_linear_model(capsys, interpret):
    ns, out = run("seed_000_linear_model.py", capsys)
    w = ns["W"].numpy()[0]
    x, y = ns["x"], ns["y_true"]
    residual = w * x - y
    for prefix in ("", "Compiled g"):
        label = f"{prefix}radient w.r.t. " if prefix else "Gradient w.r.t. "
        dW = np.array(printed(out, label + "W:").strip(" []").split(), dtype=float)
        db = np.array(printed(out, label + "b:").strip(" []").split(), dtype=float)
        np.testing.assert_allclose(dW, [np.mean(2 * residual * x)], rtol=1e-6)
        np.testing.assert_allclose(db, [np.mean(2 * residual)], rtol=1e-6)


def test_seed_001_gradient_tape(capsys, interpret):
    _, out = run("seed_001_gradient_tape.py", capsys)
    assert float(printed(out, "Gradients of w: ")) == -4.0
    assert float(printed(out, "Gradients of b: ")) == -2.0
    assert float(printed(out, "Compiled gradients of w: ")) == -4.0


def test_seed_002_tf_gradients(capsys, interpret):
    ns, out = run("seed_002_tf_gradients.py", capsys)
    assert out.splitlines()[-1] == "6.0"
    assert "traced 1 time(s) for 2 data points" in out
    values = [line for line in out.splitlines() if line.startswith("var_grad_val:")]
    data = ns["points"][1]
    residual = data @ np.array([1.0, -2.0]) - 1.0
    np.testing.assert_allclose(np.array(values[1].split("[")[1].strip(" ]").split(), float),
                               2 * data.T @ residual / len(data), rtol=1e-6)


@pytest.mark.filterwarnings("ignore:categorical_crossentropy received from_logits")
def test_seed_003_keras_model(capsys, interpret):
    ns, out = run("seed_003_keras_model.py", capsys)
    assert out.count("Gradient for kernel:") == 2 and out.count("Gradient for bias:") == 2
    assert [g.shape for g in ns["gradients"]] == [(10, 5), (5,), (5, 2), (2,)]
    losses = [float(line.split("loss")[1]) for line in out.splitlines()
              if line.startswith("compiled step")]
    assert losses == sorted(losses, reverse=True)  # SGD steps lower the loss
    assert ns["train_step"].stats.traces == 1


def test_digits_mlp_reaches_96_percent(tmp_path, capsys):
    pytest.importorskip("sklearn")
    digits = runpy.run_path(str(EXAMPLES / "digits_mlp.py"))
    plot = tmp_path / "loss.png"
    result = digits["main"](["--epochs", "20", "--eager-epochs", "1", "--verbose", "0",
                             "--plot", str(plot)])
    out = capsys.readouterr().out
    assert result["accuracy"] >= 0.96, out
    assert "ms per epoch" in out and "eager:" in out
    assert plot.exists() or "matplotlib is not installed" in out


def test_per_example_gradients(capsys, interpret):
    main = runpy.run_path(str(EXAMPLES / "per_example_gradients.py"))["main"]
    result = main(["--steps", "10"])
    assert "max difference from a loop of grad" in capsys.readouterr().out
    assert result["error"] < 1e-12 and result["losses"][-1] < result["losses"][0]


def test_ensemble(interpret):
    result = runpy.run_path(str(EXAMPLES / "ensemble.py"))["main"](["--steps", "60"])
    assert (result["last"] < result["first"]).all() and result["accuracy"] > 0.8


def _example(name: str, argv: list) -> tuple[dict, str]:
    """Run an example's main; its kernels must compile (a failed compile would
    only show as a warning: the interpreter still gives the right numbers)."""
    pytest.importorskip("sklearn")
    module = runpy.run_path(str(EXAMPLES / name))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TracejitCompileWarning)
        result = module["main"](argv)
        for thread in threading.enumerate():  # compiles still running in the background
            if thread.name == BACKGROUND_COMPILE:
                thread.join()
    failed = [str(w.message) for w in caught if issubclass(w.category, TracejitCompileWarning)]
    assert not failed, failed[0]
    return result


def test_convnet_digits_reaches_97_percent(capsys, monkeypatch):
    monkeypatch.setenv("TRACEJIT_COMPILE", "sync")  # compiled in this process, before step 1
    result = _example("convnet_digits.py", ["--epochs", "10", "--verbose", "0"])
    out = capsys.readouterr().out
    assert result["accuracy"] >= 0.97, out
    assert "train step: Stats(traces=1" in out  # one trace for every batch size


def test_lstm_sequences_reaches_95_percent(capsys):
    result = _example("lstm_sequences.py", ["--epochs", "8", "--verbose", "0"])
    assert result["accuracy"] >= 0.95, capsys.readouterr().out


def test_dropout_bn_mlp_reaches_95_percent(capsys):
    result = _example("dropout_bn_mlp.py", ["--epochs", "12", "--verbose", "0"])
    assert result["accuracy"] >= 0.95, capsys.readouterr().out
