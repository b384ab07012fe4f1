"""Seed 002, line for line: "How do I get the gradient of the loss at a
TensorFlow variable?" - the symbolic gradient of tf.gradients, and TF 2's
GradientTape.

TensorFlow 1 built `var_grad = tf.gradients(loss, [var])[0]` once and then
evaluated it at many data points with `sess.run(var_grad, feed_dict=...)`.
`tracejit.gradients(loss_fn, [var])` is that symbolic gradient: a compiled
function of the data, traced once; new data (or a new value of `var`) reuses
the kernel. Then the seed's TensorFlow 2 example, y = x ** 2 at x = 3.

    python examples/seed_002_tf_gradients.py
"""

import numpy as np

import tracejit

# data = tf.placeholder(tf.float32): the data is the loss function's argument
var = tracejit.Variable(np.array([1.0, -2.0]))  # Must be a float32 or float64 variable.


def some_function_of(var, data):  # returns a scalar, as some_function_of() returns a Tensor
    return np.mean(np.square(data @ var - 1.0))


def loss(data):
    return some_function_of(var, data)


var_grad = tracejit.gradients(loss, [var])  # tf.gradients(loss, [var])[0], built once

# Evaluate the symbolic gradient at some particular points (data)
points = [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[2.0, 1.0], [1.0, 3.0], [0.5, 0.5]])]
for data in points:
    var_grad_val = var_grad(data)[0]  # sess.run(var_grad, feed_dict={data: ...})
    print("var_grad_val:", var_grad_val)
print(f"var_grad was traced {var_grad.stats.traces} time(s) for {len(points)} data points")

# In TensorFlow 2.0 you can use GradientTape for this.
# Here goes the neural network weights as tf.Variable
x = tracejit.Variable(3.0)

# Operations executed within the context of a GradientTape are recorded
with tracejit.GradientTape() as tape:
    # Doing the computation in the context of the gradient tape
    # For example computing loss
    y = x ** 2

# Getting the gradient of network weights w.r.t. loss
dy_dx = tape.gradient(y, x)
print(dy_dx)  # Returns 6
