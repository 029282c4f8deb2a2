"""Activation names, where each may be used, and the initialisation that suits it.

The functions themselves are kernels (``gpubp.kernels.reference`` and its fused twins);
this module is the table the network validates its arguments against.
"""

HIDDEN = ("sigmoid", "tanh", "relu", "identity")
OUTPUT = HIDDEN + ("softmax", "exp")  # exp: the rate of a Poisson output

# Glorot/Xavier keeps the variance of sigmoid, tanh and linear units roughly constant
# through the layers; He doubles it to make up for the half of relu's inputs set to zero.
INIT = {"sigmoid": "glorot", "tanh": "glorot", "identity": "glorot", "softmax": "glorot",
        "relu": "he", "exp": "glorot"}


def check_activation(name, argument, allowed):
    """Return ``name`` if it is in ``allowed``, else raise a ``ValueError`` naming ``argument``."""
    if not isinstance(name, str):
        raise TypeError(f"{argument} must be a string, one of {allowed}; got {type(name).__name__}")
    if name not in allowed:
        import difflib

        alias = {"linear": "identity", "none": "identity", "logistic": "sigmoid"}.get(name.lower())
        close = [alias] if alias in allowed else \
            difflib.get_close_matches(name.lower(), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{argument} must be one of {allowed}, got {name!r}{hint}")
    return name


def init_weights(rng, fan_in, fan_out, activation, dtype):
    """Seeded initial weights of shape ``(fan_in, fan_out)`` for a layer feeding ``activation``.

    Glorot uniform ``U(±sqrt(6 / (fan_in + fan_out)))`` or He normal
    ``N(0, 2 / fan_in)``, drawn in float64 then cast so that float32 and float64
    networks built with the same seed start from the same point.
    """
    if INIT[activation] == "he":
        W = rng.normal(0.0, (2.0 / fan_in) ** 0.5, size=(fan_in, fan_out))
    else:
        limit = (6.0 / (fan_in + fan_out)) ** 0.5
        W = rng.uniform(-limit, limit, size=(fan_in, fan_out))
    return W.astype(dtype)
