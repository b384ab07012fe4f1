"""Seed 003, line for line: a Keras model's per-variable gradients and an SGD step.

shared/seeds/003 with tracejit's words: `from tensorflow.keras import Model,
layers` -> `from tracejit.nn import Model, layers`; tf.random.* -> NumPy's
generator; tf.keras.losses / optimizers -> tracejit.nn.losses / optimizers.

One line is added: the seed reads `model.trainable_variables` before the
model has ever been called, which in TensorFlow gives an empty list (so it
prints no gradient, and `apply_gradients` fails on an empty list). Building
the model first gives the seed's intent. As in Keras, the loss sees the logits
behind the last layer's softmax (`from_logits=True` on softmax outputs).
Then the same step - forward, gradient, SGD update - as one compiled kernel.

    python examples/seed_003_keras_model.py
"""

import numpy as np

import tracejit
from tracejit.nn import Model, layers

rng = np.random.default_rng(0)


# Define a simple model
class SimpleModel(Model):
    def __init__(self):
        super(SimpleModel, self).__init__()  # noqa: UP008 - the seed's spelling
        self.dense1 = layers.Dense(5, activation="relu")
        self.dense2 = layers.Dense(2, activation="softmax")

    def call(self, x):
        x = self.dense1(x)
        return self.dense2(x)


# Initialize model and data
model = SimpleModel()
inputs = rng.normal(size=[32, 10])  # batch size 32, 10 features
labels = rng.integers(0, 2, size=[32, 2])  # tf.random.uniform([32, 2], maxval=2, dtype=tf.int32)

# Loss function
loss_fn = tracejit.nn.losses.CategoricalCrossentropy(from_logits=True)

# Trainable variables of the model
model.build(input_shape=(None, 10))  # added: the variables exist once the model is built
trainable_vars = model.trainable_variables

with tracejit.GradientTape() as tape:
    predictions = model(inputs)
    loss = loss_fn(labels, predictions)

# Calculate the gradients
gradients = tape.gradient(loss, trainable_vars)

# Print gradients
for grad, var in zip(gradients, trainable_vars):
    print(f"Gradient for {var.name}: {grad}")

# Applying gradients using an optimizer
optimizer = tracejit.nn.optimizers.SGD(learning_rate=0.01)
optimizer.apply_gradients(zip(gradients, trainable_vars))
print("loss before the SGD step:", float(loss), "after:", float(loss_fn(labels, model(inputs))))


# The whole step compiled: forward, gradient and update are one kernel, which
# writes the new weights back into the model's Variables.
@tracejit.function
def train_step(inputs, labels):
    with tracejit.GradientTape() as tape:
        loss = loss_fn(labels, model(inputs))
    gradients = tape.gradient(loss, trainable_vars)
    optimizer.apply_gradients(zip(gradients, trainable_vars))
    return loss


for step in range(3):
    print(f"compiled step {step}: loss {float(train_step(inputs, labels)):.6f}")
