"""Seed 000, line for line: the loss gradient of a linear model's variables.

The TensorFlow program of shared/seeds/000, with TensorFlow's words replaced
by tracejit's (tf.Variable -> tracejit.Variable, @tf.function ->
@tracejit.function, tf.reduce_mean / tf.square -> np.mean / np.square,
tf.GradientTape -> tracejit.GradientTape). tracejit's gradients are NumPy
arrays, so `gradients[0].numpy()` becomes `gradients[0]`. Then the same
gradient once more, computed inside one compiled kernel.

    python examples/seed_000_linear_model.py
"""

import numpy as np

import tracejit

# Define model parameters
W = tracejit.Variable(np.random.normal(size=[1]), name="weight")
b = tracejit.Variable(np.zeros([1]), name="bias")
# Define model input and output
x = np.array([1.0, 2.0, 3.0, 4.0])
y_true = np.array([2.0, 4.0, 6.0, 8.0])


# Define model and loss function
@tracejit.function
def model(x):
    return W * x + b


@tracejit.function
def loss_fn(y_pred, y_true):
    return np.mean(np.square(y_pred - y_true))


# Step 2: compute the loss gradient (the tape records W and b being read)
with tracejit.GradientTape() as tape:
    y_pred = model(x)
    loss = loss_fn(y_pred, y_true)
# Compute the loss gradient with respect to the model parameters
gradients = tape.gradient(loss, [W, b])

# Step 3: output the gradients
print("Gradient w.r.t. W:", gradients[0])
print("Gradient w.r.t. b:", gradients[1])


# The same, compiled: forward pass, loss and gradient in one kernel, which
# reads W and b as inputs (a new value of W does not compile it again).
@tracejit.function
def loss_gradients(x, y_true):
    with tracejit.GradientTape() as tape:
        loss = loss_fn(model(x), y_true)
    return tape.gradient(loss, [W, b])


compiled = loss_gradients(x, y_true)
print("Compiled gradient w.r.t. W:", compiled[0])
print("Compiled gradient w.r.t. b:", compiled[1])
