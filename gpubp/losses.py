"""Loss names and the output activations each may be paired with.

Per-example costs (the network reports their mean over the batch):

- ``mse``: ``½ Σ_j (a_j − y_j)²``, with any elementwise output activation;
  ``δ^L = (a − y) ⊙ g_o'(a) / P``.
- ``binary_cross_entropy``: ``−Σ_j [y_j log a_j + (1 − y_j) log(1 − a_j)]``, sigmoid
  output; ``δ^L = (a − y) / P``.
- ``cross_entropy``: ``−Σ_j y_j log a_j``, softmax output; ``δ^L = (a − y) / P``.
- ``poisson``: half the Poisson deviance ``Σ_j [y_j log(y_j / a_j) − y_j + a_j]`` for
  counts or rates ``y >= 0``, exponential output ``a = e^z``; ``δ^L = (a − y) / P``.

The kernels are in ``gpubp.kernels``; this module holds the table.
"""

LOSSES = ("mse", "binary_cross_entropy", "cross_entropy", "poisson")
CANONICAL_OUTPUT = {"binary_cross_entropy": "sigmoid", "cross_entropy": "softmax",
                    "poisson": "exp"}
DEFAULT_LOSS = {"sigmoid": "binary_cross_entropy", "softmax": "cross_entropy",
                "exp": "poisson"}
CLASSIFIER_LOSSES = ("binary_cross_entropy", "cross_entropy")


def check_pairing(output, loss):
    """Return the loss for ``output`` (inferred when ``loss`` is None) or raise ``ValueError``."""
    if loss is None:
        return DEFAULT_LOSS.get(output, "mse")
    if not isinstance(loss, str) or loss not in LOSSES:
        import difflib

        aliases = {"squared_error": "mse", "mean_squared_error": "mse", "l2": "mse",
                   "log_loss": "cross_entropy", "categorical_crossentropy": "cross_entropy",
                   "binary_crossentropy": "binary_cross_entropy", "bce": "binary_cross_entropy"}
        close = [] if not isinstance(loss, str) else [aliases[loss.lower()]] \
            if loss.lower() in aliases else difflib.get_close_matches(loss.lower(), LOSSES, n=1,
                                                                       cutoff=0.75)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"loss must be one of {LOSSES} or None, got {loss!r}{hint}")
    required = CANONICAL_OUTPUT.get(loss)
    if required is not None and output != required:
        raise ValueError(
            f"loss={loss!r} needs output={required!r} (the pairing whose output error is "
            f"a - y), got output={output!r}"
        )
    if loss != "poisson" and output == "exp":
        raise ValueError(f"output='exp' needs loss='poisson' (its canonical pairing), got "
                         f"loss={loss!r}")
    if loss == "mse" and output == "softmax":
        raise ValueError(
            "loss='mse' needs an elementwise output activation (sigmoid, tanh, relu, "
            "identity), got output='softmax'; use loss='cross_entropy' with softmax"
        )
    return loss


def is_classifier(loss):
    """Classifiers predict labels and report accuracy; regressors predict outputs."""
    return loss in CLASSIFIER_LOSSES
