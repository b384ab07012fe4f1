"""Seed 001, line for line: GradientTape on a scalar model w * x + b.

shared/seeds/001 with tracejit's words (tf.constant -> a NumPy value,
tf.Variable -> tracejit.Variable, tf.square -> np.square); gradients are NumPy
values, so `.numpy()` is not needed. Then the same gradients from one
compiled kernel.

    python examples/seed_001_gradient_tape.py
"""

import numpy as np

import tracejit

# Define some dummy data
x = np.float64(2.0)
y = np.float64(3.0)

# Define the variables to be trained
w = tracejit.Variable(0.5)
b = tracejit.Variable(1.0)


# Define the forward pass
def forward_pass(x):
    return w * x + b


# Define the loss function
def loss_fn(y_true, y_pred):
    return np.square(y_true - y_pred)


# Use GradientTape to compute gradients
with tracejit.GradientTape() as tape:
    # Compute the forward pass
    y_pred = forward_pass(x)
    # Compute the loss
    loss = loss_fn(y, y_pred)

# Compute gradients
gradients = tape.gradient(loss, [w, b])

# Print the gradients
print("Gradients of w: ", gradients[0])
print("Gradients of b: ", gradients[1])


# The same computation traced and compiled into one kernel.
@tracejit.function
def gradients_at(x, y):
    with tracejit.GradientTape() as tape:
        loss = loss_fn(y, forward_pass(x))
    return tape.gradient(loss, [w, b])


compiled = gradients_at(x, y)
print("Compiled gradients of w: ", compiled[0])
print("Compiled gradients of b: ", compiled[1])
