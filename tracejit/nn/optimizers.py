"""Optimizers with Keras' names, defaults and update rules: SGD (momentum,
Nesterov), Adam (amsgrad), AdamW, RMSprop (momentum, centered), Adagrad.

    optimizer = tracejit.nn.optimizers.Adam(learning_rate=1e-3)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))

Eagerly an update runs in NumPy; inside `@tracejit.function` it is part of
the kernel, and the new values of the variables and slots are written back
after the call. Every hyperparameter (learning rate, betas, momentum, epsilon,
weight decay) is held in a non-trainable Variable: changing it between calls
does not trace again. The slots (`momentum`, `velocity`, ...) are Variables
too, created on the first `apply_gradients`. A learning rate may be a float or
a schedule (`schedules.ExponentialDecay(...)`, a function of the step count);
switching between them retraces the functions that use the optimizer.
"""

from __future__ import annotations

import math

import numpy as np

from ..frontend import protocol, variables
from ..frontend.variables import Variable
from ..trace import ops
from ..trace.tracer import operand
from . import arguments


class LearningRateSchedule:
    """A learning rate as a function of the optimizer's step count (traced code)."""

    def __call__(self, step):
        raise NotImplementedError


class _DecayPerSteps(LearningRateSchedule):
    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps, self.decay_rate, self.staircase = decay_steps, decay_rate, staircase

    def periods(self, step):
        """Decay periods done: step / decay_steps (whole ones with `staircase`)."""
        p = _float(step) / self.decay_steps
        return np.floor(p) if self.staircase else p


class ExponentialDecay(_DecayPerSteps):
    def __call__(self, step):
        return self.initial_learning_rate * np.power(self.decay_rate, self.periods(step))


class InverseTimeDecay(_DecayPerSteps):
    def __call__(self, step):
        return self.initial_learning_rate / (1.0 + self.decay_rate * self.periods(step))


class CosineDecay(LearningRateSchedule):
    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0):
        self.initial_learning_rate, self.decay_steps, self.alpha = (
            initial_learning_rate, decay_steps, alpha)

    def __call__(self, step):
        done = np.minimum(_float(step), float(self.decay_steps)) / self.decay_steps
        cosine = 0.5 * (1.0 + np.cos(math.pi * done))
        return self.initial_learning_rate * ((1.0 - self.alpha) * cosine + self.alpha)


class PiecewiseConstantDecay(LearningRateSchedule):
    """values[i] while boundaries[i-1] < step <= boundaries[i]."""

    def __init__(self, boundaries, values):
        if len(values) != len(boundaries) + 1:
            raise ValueError("PiecewiseConstantDecay: one more value than boundaries")
        self.boundaries, self.values = list(boundaries), list(values)

    def __call__(self, step):
        step = _float(step)
        rate = float(self.values[-1])
        for boundary, value in reversed(list(zip(self.boundaries, self.values))):
            rate = np.where(step <= boundary, float(value), rate)
        return rate


class schedules:  # noqa: N801 - a namespace named as Keras'
    LearningRateSchedule = LearningRateSchedule
    ExponentialDecay = ExponentialDecay
    InverseTimeDecay = InverseTimeDecay
    CosineDecay = CosineDecay
    PiecewiseConstantDecay = PiecewiseConstantDecay


def _float(x):
    return ops.convert(operand(x), np.float64)


def _cast(x, dtype):
    """A hyperparameter (Variable, float, traced value) in a variable's dtype."""
    return ops.convert(operand(x), dtype)


class Optimizer:
    """The base: hyperparameters, slots, gradient clipping, weight decay and
    `apply_gradients`. Subclasses implement `build_slots` and `update_step`."""

    default_name = "optimizer"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        arguments.capture_init(cls)  # constructor arguments, for model.save
        if "default_name" not in cls.__dict__:  # Keras': "adam", "rmsprop"; "SGD"
            cls.default_name = cls.__name__.lower()

    def __init__(self, learning_rate, name=None, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None):
        if sum(c is not None for c in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError("set at most one of clipnorm, clipvalue and global_clipnorm")
        self.name = name or type(self).default_name
        self.iterations = Variable(np.int64(0), trainable=False, name="iteration")
        self.iterations.path = f"{self.name}/iteration"
        self._hyper: dict[str, Variable] = {}
        self._schedule = None
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self._clip = (clipnorm, clipvalue, global_clipnorm)
        self._slots: dict[int, dict[str, Variable]] = {}

    # ----------------------------------------------------- hyperparameters
    def _set_hyper(self, name: str, value) -> None:
        if name in self._hyper:
            self._hyper[name].assign(value)
            return
        self._hyper[name] = Variable(np.float64(value), trainable=False, name=name)
        self._hyper[name].path = f"{self.name}/{name}"
        if self.__dict__.get("_applied"):
            protocol.structure_changed()  # traced updates did not use this one

    def __setattr__(self, name, value):
        if name in type(self).HYPERPARAMETERS and "_hyper" in self.__dict__:
            if value is not None:
                self._set_hyper(name, value)
            elif name in self._hyper:
                del self._hyper[name]
                protocol.structure_changed()
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        hyper = self.__dict__.get("_hyper", {})
        if name in hyper:
            return hyper[name].numpy()
        raise AttributeError(name)

    HYPERPARAMETERS = ("weight_decay",)

    @property
    def learning_rate(self):
        """The learning rate now (the schedule's value at the current step)."""
        if self._schedule is not None:
            return np.asarray(self._schedule(self.iterations.numpy()))[()]
        return self._hyper["learning_rate"].numpy()

    @learning_rate.setter
    def learning_rate(self, value):
        schedule = value if isinstance(value, LearningRateSchedule) or callable(value) else None
        if schedule is not self._schedule and (schedule is not None or self._schedule is not None):
            protocol.structure_changed()  # traced code baked the old schedule in
        self._schedule = schedule
        if schedule is None:
            self._set_hyper("learning_rate", value)

    def current_learning_rate(self):
        """The learning rate as traced code sees it (a Variable or the schedule's value)."""
        if self._schedule is not None:
            return self._schedule(self.iterations)
        return self._hyper["learning_rate"]

    # --------------------------------------------------------------- slots
    def add_variable_from_reference(self, reference: Variable, name: str,
                                    initial_value=0.0) -> Variable:
        value = np.full(reference.shape, initial_value, dtype=reference.dtype)
        slot = Variable(value, trainable=False, name=f"{reference.name}_{name}")
        slot.path = f"{self.name}/{reference.path.replace('/', '_')}_{name}"
        self._slots.setdefault(id(reference), {})[name] = slot
        return slot

    def slot(self, variable: Variable, name: str) -> Variable:
        return self._slots[id(variable)][name]

    def build(self, var_list) -> None:
        for var in var_list:
            if id(var) not in self._slots:
                self._slots[id(var)] = {}
                self.build_slots(var)

    def build_slots(self, variable: Variable) -> None:
        """Create the slot Variables of one trained variable."""

    @property
    def variables(self) -> list:
        slots = [s for per_var in self._slots.values() for s in per_var.values()]
        return [self.iterations, *self._hyper.values(), *slots]

    # -------------------------------------------------------------- update
    def apply_gradients(self, grads_and_vars):
        """Apply one update: `grads_and_vars` pairs (None gradients skipped)."""
        pairs = [(g, v) for g, v in grads_and_vars if g is not None]
        if not pairs:
            raise ValueError("apply_gradients: no (gradient, variable) pairs with a gradient "
                             "(were the variables read before the model was built?)")
        grads, var_list = [g for g, _ in pairs], [v for _, v in pairs]
        for var in var_list:
            if not isinstance(var, Variable):
                raise TypeError(f"apply_gradients: expected tracejit.Variable, got "
                                f"{type(var).__name__}")
        self.build(var_list)
        self._applied = True
        learning_rate = self.current_learning_rate()
        grads = self._clipped(grads)
        if "weight_decay" in self._hyper:
            for var in var_list:
                decay = _cast(self._hyper["weight_decay"], var.dtype) * _cast(
                    learning_rate, var.dtype)
                var.assign(variables.current(var) - variables.current(var) * decay)
        for grad, var in zip(grads, var_list):
            self.update_step(_cast(grad, var.dtype), var, _cast(learning_rate, var.dtype))
        self.iterations.assign_add(1)
        return self.iterations

    def minimize(self, loss, var_list, tape=None):
        """`loss()` (a function), its gradient and one update, as TF2's minimize."""
        from ..frontend.tape import GradientTape

        with GradientTape() as tape:
            value = loss()
        self.apply_gradients(zip(tape.gradient(value, var_list), var_list))
        return value

    def update_step(self, gradient, variable: Variable, learning_rate) -> None:
        raise NotImplementedError

    def _clipped(self, grads) -> list:
        clipnorm, clipvalue, global_clipnorm = self._clip
        grads = [operand(g) for g in grads]
        if clipvalue is not None:
            return [np.clip(g, -clipvalue, clipvalue) for g in grads]
        if clipnorm is not None:
            return [g * (clipnorm / np.maximum(np.sqrt(np.sum(np.square(g))), clipnorm))
                    for g in grads]
        if global_clipnorm is not None:
            norm = np.sqrt(sum(np.sum(np.square(g)) for g in grads))
            scale = global_clipnorm / np.maximum(norm, global_clipnorm)
            return [g * scale for g in grads]
        return grads

    def _hp(self, name, dtype):
        return _cast(self._hyper[name], dtype)

    def _step(self, dtype):
        """The step count of this update, from 1, in `dtype`."""
        return _cast(variables.current(self.iterations) + 1, dtype)


def _current(var: Variable):
    return variables.current(var)


class SGD(Optimizer):
    """Keras' SGD: with momentum m, v <- m v - lr g; w <- w + v (Nesterov:
    w <- w + m v - lr g); without, w <- w - lr g."""

    default_name = "SGD"

    HYPERPARAMETERS = ("momentum", "weight_decay")

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, name=None, **kwargs):
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"SGD: momentum must be in [0, 1], got {momentum}")
        super().__init__(learning_rate, name, **kwargs)
        self._uses_momentum = momentum != 0
        self.momentum = momentum
        self.nesterov = nesterov

    def build_slots(self, variable):
        if self._uses_momentum:
            self.add_variable_from_reference(variable, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        if not self._uses_momentum:
            variable.assign_sub(gradient * learning_rate)
            return
        m = self.slot(variable, "momentum")
        momentum = self._hp("momentum", variable.dtype)
        m.assign(_current(m) * momentum - gradient * learning_rate)
        if self.nesterov:
            variable.assign_add(_current(m) * momentum - gradient * learning_rate)
        else:
            variable.assign_add(_current(m))


class Adam(Optimizer):
    """Keras' Adam: m <- m + (g - m)(1 - b1), v <- v + (g^2 - v)(1 - b2),
    w <- w - lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)."""

    HYPERPARAMETERS = ("beta_1", "beta_2", "epsilon", "weight_decay")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, name=None, **kwargs):
        super().__init__(learning_rate, name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.amsgrad = amsgrad

    def build_slots(self, variable):
        self.add_variable_from_reference(variable, "momentum")
        self.add_variable_from_reference(variable, "velocity")
        if self.amsgrad:
            self.add_variable_from_reference(variable, "velocity_hat")

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        t = self._step(dtype)
        beta_1, beta_2 = self._hp("beta_1", dtype), self._hp("beta_2", dtype)
        alpha = learning_rate * np.sqrt(1.0 - beta_2 ** t) / (1.0 - beta_1 ** t)
        m, v = self.slot(variable, "momentum"), self.slot(variable, "velocity")
        m.assign_add((gradient - _current(m)) * (1.0 - beta_1))
        v.assign_add((np.square(gradient) - _current(v)) * (1.0 - beta_2))
        if self.amsgrad:
            v_hat = self.slot(variable, "velocity_hat")
            v_hat.assign(np.maximum(_current(v_hat), _current(v)))
            v = v_hat
        variable.assign_sub(_current(m) * alpha / (np.sqrt(_current(v))
                                                   + self._hp("epsilon", dtype)))


class AdamW(Adam):
    """Adam with decoupled weight decay: w <- w - w * weight_decay * lr first."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, amsgrad=False, name=None, **kwargs):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, name,
                         weight_decay=weight_decay, **kwargs)


class RMSprop(Optimizer):
    """Keras' RMSprop: v <- rho v + (1 - rho) g^2; step lr g / sqrt(v + eps)
    (centered: v - mean(g)^2 + eps), through a momentum slot if momentum > 0."""

    HYPERPARAMETERS = ("rho", "momentum", "epsilon", "weight_decay")

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
                 centered=False, name=None, **kwargs):
        super().__init__(learning_rate, name, **kwargs)
        self._uses_momentum = momentum != 0
        self.rho, self.momentum, self.epsilon = rho, momentum, epsilon
        self.centered = centered

    def build_slots(self, variable):
        self.add_variable_from_reference(variable, "velocity")
        if self._uses_momentum:
            self.add_variable_from_reference(variable, "momentum")
        if self.centered:
            self.add_variable_from_reference(variable, "average_gradient")

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        rho = self._hp("rho", dtype)
        velocity = self.slot(variable, "velocity")
        velocity.assign(rho * _current(velocity) + (1.0 - rho) * np.square(gradient))
        denominator = _current(velocity) + self._hp("epsilon", dtype)
        if self.centered:
            average = self.slot(variable, "average_gradient")
            average.assign(rho * _current(average) + (1.0 - rho) * gradient)
            denominator = denominator - np.square(_current(average))
        increment = learning_rate * gradient / np.sqrt(denominator)
        if self._uses_momentum:
            m = self.slot(variable, "momentum")
            m.assign(self._hp("momentum", dtype) * _current(m) + increment)
            variable.assign_sub(_current(m))
        else:
            variable.assign_sub(increment)


class Adagrad(Optimizer):
    """Keras' Adagrad: a <- a + g^2; w <- w - lr g / sqrt(a + eps)."""

    HYPERPARAMETERS = ("epsilon", "weight_decay")

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7,
                 name=None, **kwargs):
        super().__init__(learning_rate, name, **kwargs)
        self.initial_accumulator_value = initial_accumulator_value
        self.epsilon = epsilon

    def build_slots(self, variable):
        self.add_variable_from_reference(variable, "accumulator",
                                         self.initial_accumulator_value)

    def update_step(self, gradient, variable, learning_rate):
        accumulator = self.slot(variable, "accumulator")
        accumulator.assign_add(np.square(gradient))
        variable.assign_sub(learning_rate * gradient / np.sqrt(
            _current(accumulator) + self._hp("epsilon", variable.dtype)))


NAMES = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}


def get(identifier) -> Optimizer:
    if isinstance(identifier, Optimizer):
        return identifier
    try:
        return NAMES[identifier.lower()]()
    except (KeyError, AttributeError):
        raise ValueError(f"unknown optimizer {identifier!r}; known: "
                         f"{', '.join(sorted(NAMES))}") from None

