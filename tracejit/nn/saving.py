"""`model.save(path)` and `tracejit.nn.load_model(path)`: a whole Sequential
model - architecture, weights, and the compiled optimizer's and loss's
settings and state - in one `.npz` file that loading never executes.

The file holds NumPy arrays only (read back with `allow_pickle=False`):
- `config`: a JSON document (as a uint8 array), format "tracejit-model/1":
  `{"format", "class": "Sequential", "input": [None, ...], "layers": [{"class",
  "args", "kwargs"}], "compile": {"optimizer": {...}, "loss": {...},
  "metrics": [names]} | null}` - each object its class name (looked up among
  `tracejit.nn`'s own classes only) and the arguments it was constructed with;
- `weight/NNNN`: the model's weights in `model.weights` order;
- `optimizer/NNNN`: the optimizer's variables (iterations, hyperparameters,
  slots) in `optimizer.variables` order.

Constructor arguments must be JSON values (numbers, strings, lists, dicts,
None): layers configured with objects (an initializer instance, a Python
function) cannot be saved this way (`save_weights` still works).
"""

from __future__ import annotations

import json

import numpy as np

from . import arguments, losses, optimizers
from .layers import Layer
from .models import Sequential

FORMAT = "tracejit-model/1"


def _describe(obj, what: str) -> dict:
    config = obj.__dict__.get("_config")
    if config is None:
        raise ValueError(f"save: {what} {obj!r} has no recorded constructor arguments")
    name, args, kwargs = config
    document = {"class": name, "args": list(args), "kwargs": dict(kwargs)}
    try:
        json.dumps(document)
    except TypeError as err:
        raise ValueError(f"save: {what} {name} was built with arguments that are not JSON "
                         f"values ({err}); give names (\"relu\", \"glorot_uniform\") or use "
                         "save_weights") from None
    return document


def save_model(model, filepath) -> None:
    if type(model) is not Sequential:
        raise ValueError(f"save writes Sequential models; {type(model).__name__} is a "
                         "subclassed model (its code is not data): use save_weights")
    if not model.built or not model.weights:
        raise ValueError("save: build the model first (call it, or give it an Input)")
    config = {
        "format": FORMAT, "class": "Sequential", "name": model.name,
        "input": list(model._input) if model._input is not None else None,
        "layers": [_describe(layer, "layer") for layer in model.layers],
        "compile": _compile_config(model),
    }
    arrays = {"config": np.frombuffer(json.dumps(config).encode(), np.uint8)}
    arrays.update({f"weight/{k:04d}": w for k, w in enumerate(model.get_weights())})
    if model.optimizer is not None:
        arrays.update({f"optimizer/{k:04d}": np.asarray(v.numpy())
                       for k, v in enumerate(model.optimizer.variables)})
    filepath = str(filepath)
    with open(filepath, "wb") as file:  # np.savez would append .npz to any other name
        np.savez(file, **arrays)


def _compile_config(model):
    if model.optimizer is None:
        return None
    metrics = [getattr(m, "name", None) for m in model.compiled_metrics]
    return {"optimizer": _describe(model.optimizer, "optimizer"),
            "loss": _describe(model.loss, "loss"), "metrics": metrics}


def load_model(filepath):
    """A model saved by `model.save(filepath)`, compiled as it was, its
    optimizer state restored."""
    with np.load(str(filepath), allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    config = json.loads(arrays.pop("config").tobytes().decode())
    if config.get("format") != FORMAT or config.get("class") != "Sequential":
        raise ValueError(f"{filepath}: not a {FORMAT} Sequential model file")
    layers = [_build(item, _classes(Layer)) for item in config["layers"]]
    model = Sequential(layers, name=config.get("name"))
    if config["input"] is not None:
        model.build(tuple(config["input"]))
    compiled = config.get("compile")
    if compiled is not None:
        model.compile(optimizer=_build(compiled["optimizer"], _classes(optimizers.Optimizer)),
                      loss=_build(compiled["loss"], _classes(losses.Loss)),
                      metrics=[m for m in compiled["metrics"] if m])
    model.set_weights([arrays[f"weight/{k:04d}"] for k in range(len(model.weights))])
    saved = sorted(name for name in arrays if name.startswith("optimizer/"))
    if saved and model.optimizer is not None:
        model.optimizer.build(model.trainable_variables)
        variables = model.optimizer.variables
        if len(variables) != len(saved):
            raise ValueError(f"{filepath}: {len(saved)} optimizer arrays for "
                             f"{len(variables)} optimizer variables")
        for var, name in zip(variables, saved):
            var.assign(arrays[name])
    return model


def _build(item: dict, classes: dict):
    cls = classes.get(item["class"])
    if cls is None:
        raise ValueError(f"load_model: unknown class {item['class']!r}")
    return cls(*item["args"], **item["kwargs"])


def _classes(base) -> dict:
    """tracejit.nn's own subclasses of `base` by name: all a file may construct."""
    return {name: cls for name, cls in arguments.CLASSES.items()
            if issubclass(cls, base) and cls.__module__.startswith("tracejit.nn.")}
