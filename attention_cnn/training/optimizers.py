"""``FusedAdam``: Keras' Adam whose update runs as TensorFlow's one fused kernel (``ResourceApplyAdam``).

Keras 3's Adam updates each variable with about a dozen separate element-wise ops, each a pass over
memory. The study's speech ``cnn`` has a 25-million-weight dense layer, so on a CPU those passes cost
about 45 ms of a 330 ms step; the fused kernel makes the same update in one pass (about 12 ms,
``make bench`` lists it as a lever). Same formula, same hyperparameters, same saved config as
``keras.optimizers.Adam``:

    m <- m + (g - m)(1 - beta_1);  v <- v + (g^2 - v)(1 - beta_2)
    w <- w - lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)

The fused path is taken for dense float gradients outside distribution strategies; anything else
(several replicas, sparse gradients, amsgrad, another Keras backend) falls back to Keras' own update.
"""
from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="attention_cnn", name="FusedAdam")
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with a one-kernel update on TensorFlow (see the module docstring)."""

    def update_step(self, gradient, variable, learning_rate):
        fused = _fused_inputs(self, gradient, variable)
        if fused is None:
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        var, m, v = fused
        dtype = var.dtype
        step = tf.cast(self.iterations + 1, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=var.handle, m=m.handle, v=v.handle,
            beta1_power=tf.pow(tf.cast(self.beta_1, dtype), step), beta2_power=tf.pow(tf.cast(self.beta_2, dtype), step),
            lr=tf.cast(learning_rate, dtype), beta1=tf.cast(self.beta_1, dtype), beta2=tf.cast(self.beta_2, dtype),
            epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype), use_locking=False)


def _fused_inputs(opt: FusedAdam, gradient, variable):
    """``(var, m, v)`` as plain TensorFlow resource variables when the fused kernel applies, else None."""
    if keras.backend.backend() != "tensorflow" or opt.amsgrad:
        return None
    import tensorflow as tf

    if isinstance(gradient, tf.IndexedSlices) or tf.distribute.has_strategy():  # any strategy but the default one
        return None
    index = opt._get_variable_index(variable)
    out = []
    for v in (variable, opt._momentums[index], opt._velocities[index]):
        value = v if isinstance(v, tf.Variable) else getattr(v, "value", None)   # Keras variables wrap one
        if not isinstance(value, tf.Variable) or not hasattr(value, "handle") or not value.dtype.is_floating:
            return None
        out.append(value)
    return tuple(out)
