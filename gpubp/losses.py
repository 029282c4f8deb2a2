"""The loss table: every loss name once, its code, the output it pairs with, what it fits.

Per-example costs (the network reports their mean over the batch):

- ``mse``: ``½ Σ_j (a_j − y_j)²``, with any elementwise output activation whose ``g'`` is
  written through ``a``; ``δ^L = (a − y) ⊙ g_o'(a) / P``.
- ``binary_cross_entropy``: ``−Σ_j [y_j log a_j + (1 − y_j) log(1 − a_j)]``, sigmoid
  output; ``δ^L = (a − y) / P``.
- ``cross_entropy``: ``−Σ_j y_j log a_j``, softmax output; ``δ^L = (a − y) / P``.
- ``poisson``: half the Poisson deviance ``Σ_j [y_j log(y_j / a_j) − y_j + a_j]`` for
  counts or rates ``y >= 0``, exponential output ``a = e^z``; ``δ^L = (a − y) / P``.
- ``huber``: ``Σ_j h_δ(a_j − y_j)`` with ``h_δ(d) = ½ d²`` for ``|d| <= δ`` and
  ``δ (|d| − ½ δ)`` beyond (PyTorch's ``HuberLoss(delta=δ)`` summed over the outputs: it is
  ``n_L`` times PyTorch's elementwise mean, as ``mse`` here is ``n_L / 2`` times
  ``MSELoss``); ``δ^L = clip(a − y, −δ, δ) ⊙ g_o'(a) / P``. Parameter ``huber_delta``
  (δ > 0, default 1.0, PyTorch's).
- ``l1``: ``Σ_j |a_j − y_j|`` (``n_L`` times PyTorch's ``L1Loss``); ``δ^L = sign(a − y) ⊙
  g_o'(a) / P`` with ``sign(0) = 0``, PyTorch's subgradient at the kink.

Label smoothing (parameter ``label_smoothing`` ``ε`` in [0, 1), of the two log-losses):
the targets become ``(1 − ε) y + ε / K`` inside the output kernels, ``K`` the number of
classes: ``n_L`` for ``cross_entropy`` (PyTorch's ``CrossEntropyLoss(label_smoothing=ε)``),
2 for each output of ``binary_cross_entropy`` (Keras's ``BinaryCrossentropy``: ``y (1 − ε)
+ ε / 2``; PyTorch's ``BCELoss`` has none). The cost is taken against the smoothed
targets, as both report it, and ``δ^L = (a − ỹ) / P`` still (``ỹ`` sums to 1 per row
when ``y`` does).

The kernels are in ``gpubp.kernels`` and take their integer codes from here, as do the
scikit-learn estimators their loss names; ``tests/test_tables.py`` runs every row through
every consumer.

=====================  ====  ================  ==========  =============  =======
name                   code  canonical_output  classifier  sklearn        targets
=====================  ====  ================  ==========  =============  =======
mse                    0     (none)            no          squared_error  real
binary_cross_entropy   1     sigmoid           yes         log_loss       binary
cross_entropy          2     softmax           yes         log_loss       labels
poisson                3     exp               no          poisson        counts
huber                  4     (none)            no          (none)         real
l1                     5     (none)            no          (none)         real
=====================  ====  ================  ==========  =============  =======

Each row's ``parameter`` names the one scalar it takes (the :class:`~gpubp.Network`
keyword), None for none; the kernels take its value as ``loss_param``.
"""

import difflib
import numbers

from dataclasses import dataclass

TARGETS = ("real", "binary", "labels", "counts")


@dataclass(frozen=True)
class Loss:
    """One row of the table.

    Attributes
    ----------
    name : str
    code : int
        The integer the compiled kernels dispatch on; unique, >= 0.
    canonical_output : str or None
        The output activation it must be paired with, where ``g_o'`` cancels with
        ``∂c/∂a`` (``δ^L = (a − y) / P``); it is also the loss that output defaults to.
        None: any output activation with ``g'`` written through ``a``.
    classifier : bool
        Classifiers predict labels and report accuracy; regressors predict outputs.
    sklearn : str or None
        scikit-learn's name for it (``MLPRegressor(loss=...)``; the classifier's
        ``loss`` attribute).
    targets : str
        One of :data:`TARGETS`: real values, 0/1 labels, one class per row (one-hot), or
        counts ``>= 0``.
    parameter : str or None
        The keyword of its one parameter (``"label_smoothing"``, ``"huber_delta"``), whose
        value the kernels take as ``loss_param``; None: it has none.
    """

    name: str
    code: int
    canonical_output: str | None
    classifier: bool
    sklearn: str | None
    targets: str
    parameter: str | None = None


LOSSES = {l.name: l for l in (
    Loss("mse", 0, None, False, "squared_error", "real"),
    Loss("binary_cross_entropy", 1, "sigmoid", True, "log_loss", "binary", "label_smoothing"),
    Loss("cross_entropy", 2, "softmax", True, "log_loss", "labels", "label_smoothing"),
    Loss("poisson", 3, "exp", False, "poisson", "counts"),
    Loss("huber", 4, None, False, None, "real", "huber_delta"),
    Loss("l1", 5, None, False, None, "real"),
)}

# the loss parameters: keyword -> (default, what it must be)
PARAMETERS = {"label_smoothing": (0.0, "a number in [0, 1)"),
              "huber_delta": (1.0, "a number > 0")}

NAMES = tuple(LOSSES)
CODES = {l.name: l.code for l in LOSSES.values()}
CANONICAL_OUTPUT = {l.name: l.canonical_output for l in LOSSES.values()
                    if l.canonical_output is not None}
DEFAULT_LOSS = {output: name for name, output in CANONICAL_OUTPUT.items()}
CLASSIFIER_LOSSES = tuple(l.name for l in LOSSES.values() if l.classifier)


def _check_table():
    codes = [l.code for l in LOSSES.values()]
    assert len(set(codes)) == len(codes) and min(codes) >= 0, codes
    assert len(DEFAULT_LOSS) == len(CANONICAL_OUTPUT), "one canonical loss per output"
    for l in LOSSES.values():
        assert l.targets in TARGETS, l
        assert l.parameter is None or l.parameter in PARAMETERS, l


_check_table()


def code(name):
    """The kernels' integer code of loss ``name`` (``KeyError`` if unknown)."""
    return LOSSES[name].code


def sklearn_regressor_losses():
    """scikit-learn's names of the regression losses -> gpubp's names."""
    return {l.sklearn: l.name for l in LOSSES.values()
            if l.sklearn is not None and not l.classifier}


def check_pairing(output, loss, activations):
    """Return the loss for ``output`` (inferred when ``loss`` is None) or raise ``ValueError``.

    ``activations`` is the activation table (``gpubp.activations.ACTIVATIONS``, passed in:
    this module imports nothing of gpubp); ``output`` is one of its names.
    """
    if loss is None:
        return DEFAULT_LOSS.get(output, "mse")
    if not isinstance(loss, str) or loss not in LOSSES:
        aliases = {"squared_error": "mse", "mean_squared_error": "mse", "l2": "mse",
                   "log_loss": "cross_entropy", "categorical_crossentropy": "cross_entropy",
                   "binary_crossentropy": "binary_cross_entropy", "bce": "binary_cross_entropy"}
        close = [] if not isinstance(loss, str) else [aliases[loss.lower()]] \
            if loss.lower() in aliases else difflib.get_close_matches(loss.lower(), NAMES, n=1,
                                                                       cutoff=0.75)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"loss must be one of {NAMES} or None, got {loss!r}{hint}")
    required = CANONICAL_OUTPUT.get(loss)
    if required is not None and output != required:
        raise ValueError(
            f"loss={loss!r} needs output={required!r} (the pairing whose output error is "
            f"a - y), got output={output!r}"
        )
    g = activations[output]
    if required is None and g.derivative != "from_output":
        # an output without g' of its own: only its canonical loss, where g_o' cancels
        if g.elementwise:
            raise ValueError(f"output={output!r} needs loss={DEFAULT_LOSS[output]!r} (its "
                             f"canonical pairing), got loss={loss!r}")
        usable = ", ".join(a.name for a in activations.values()
                           if a.output and a.derivative == "from_output")
        raise ValueError(
            f"loss={loss!r} needs an elementwise output activation ({usable}), got "
            f"output={output!r}; use loss={DEFAULT_LOSS[output]!r} with {output}"
        )
    return loss


def loss_param(loss, **given):
    """The value the kernels take as ``loss_param`` for ``loss``, from the keywords of
    :data:`PARAMETERS` (``label_smoothing=``, ``huber_delta=``); 0.0 for a loss without one.

    Raises
    ------
    TypeError
        A value that is not a real number.
    ValueError
        A value out of its range, or a keyword other than its default with a loss that
        does not take it (nothing is silently ignored).
    """
    own = LOSSES[loss].parameter
    for key, value in given.items():
        default, expected = PARAMETERS[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{key} must be {expected}, got {value!r}")
        value = float(value)
        in_range = (0.0 <= value < 1.0) if key == "label_smoothing" else (0.0 < value < float("inf"))
        if not in_range:
            raise ValueError(f"{key} must be {expected}, got {value!r}")
        if key != own and value != default:
            takers = [l.name for l in LOSSES.values() if l.parameter == key]
            raise ValueError(f"{key}={value!r} applies to loss {' or '.join(map(repr, takers))}"
                             f", got loss={loss!r}")
    if own is None:
        return 0.0
    return float(given.get(own, PARAMETERS[own][0]))


def keywords(loss, loss_param):
    """The :class:`~gpubp.Network` keyword that gives ``loss`` its ``loss_param``, as a
    dict (``{}`` for a loss without a parameter): how a copy of a network is built."""
    name = LOSSES[loss].parameter
    return {} if name is None else {name: loss_param}


def is_classifier(loss):
    """Classifiers predict labels and report accuracy; regressors predict outputs."""
    row = LOSSES.get(loss)
    return row is not None and row.classifier
