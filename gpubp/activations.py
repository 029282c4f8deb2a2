"""The activation table: every activation name once, with all that its consumers need.

The functions themselves are kernels (``gpubp.kernels.reference`` and its fused twins);
this module is the one table that the network validates its arguments against and that
every consumer derives its names from: the kernels of every target take their integer
codes from it, ONNX export its operators, the scikit-learn estimators their names, the
command line its help. ``tests/test_tables.py`` runs every row through every consumer.

=========  ====  ===========  ======  ========  ========  ======  ======
name       code  derivative   init    onnx      sklearn   hidden  output
=========  ====  ===========  ======  ========  ========  ======  ======
sigmoid    0     from_output  glorot  Sigmoid   logistic  yes     yes
tanh       1     from_output  glorot  Tanh      tanh      yes     yes
relu       2     from_output  he      Relu      relu      yes     yes
identity   3     from_output  glorot  Identity  identity  yes     yes
softmax    4     cancels      glorot  Softmax   softmax   no      yes
exp        5     cancels      glorot  Exp       exp       no      yes
=========  ====  ===========  ======  ========  ========  ======  ======

``derivative``: ``"from_output"``, ``g'(z)`` written through the output ``a = g(z)``
(sigmoid ``a(1−a)``, tanh ``1−a²``, relu ``a>0``, identity ``1``), so ``z`` need not be
stored; ``"cancels"``, no ``g'`` of its own: the activation is an output paired with its
canonical loss (``gpubp.losses``), where ``g_o'`` cancels with ``∂c/∂a`` and
``δ^L = (a − y)/P``. (An activation whose derivative needs ``z``, gelu or silu, would add
``"from_z"``.)

``init``: Glorot/Xavier keeps the variance of sigmoid, tanh and linear units roughly
constant through the layers; He doubles it to make up for the half of relu's inputs set
to zero.
"""

from dataclasses import dataclass
import difflib

DERIVATIVES = ("from_output", "cancels")
INITS = ("glorot", "he")


@dataclass(frozen=True)
class Activation:
    """One row of the table.

    Attributes
    ----------
    name : str
    code : int
        The integer the compiled kernels (CPU and CUDA) dispatch on; unique, >= 0.
    derivative : str
        One of :data:`DERIVATIVES` (see the module docstring).
    init : str
        One of :data:`INITS`: the initial weights of a layer feeding this activation.
    onnx : str
        The ``ai.onnx`` operator applying it to ``z``.
    sklearn : str or None
        scikit-learn's name for it (``activation`` / ``out_activation_``), or None.
    hidden, output : bool
        Whether a hidden layer, the output layer, may use it.
    elementwise : bool
        ``g(z)_j`` depends on ``z_j`` alone (softmax is row-wise).
    capped : bool
        The kernels take ``g(min(z, EXP_CAP))`` so it cannot overflow
        (``gpubp.kernels.reference.EXP_CAP``); the ONNX graph does the same.
    onnx_attributes : tuple of (str, value) pairs
        Attributes of the ONNX node.
    torch : str or None
        The ``torch.nn`` module class applying it (:func:`gpubp.from_torch`,
        :meth:`gpubp.Network.to_torch`), or None where PyTorch has none.
    torch_arguments : tuple of (str, value) pairs
        The keyword arguments that module is built with by ``to_torch``, and the attribute
        values ``from_torch`` requires of it (a ``dim`` of 1 is -1 for ``(P, n)`` inputs).
    """

    name: str
    code: int
    derivative: str
    init: str
    onnx: str
    sklearn: str | None
    hidden: bool
    output: bool
    elementwise: bool = True
    capped: bool = False
    onnx_attributes: tuple = ()
    torch: str | None = None
    torch_arguments: tuple = ()


ACTIVATIONS = {a.name: a for a in (
    Activation("sigmoid", 0, "from_output", "glorot", "Sigmoid", "logistic", True, True,
               torch="Sigmoid"),
    Activation("tanh", 1, "from_output", "glorot", "Tanh", "tanh", True, True, torch="Tanh"),
    Activation("relu", 2, "from_output", "he", "Relu", "relu", True, True, torch="ReLU"),
    Activation("identity", 3, "from_output", "glorot", "Identity", "identity", True, True,
               torch="Identity"),
    Activation("softmax", 4, "cancels", "glorot", "Softmax", "softmax", False, True,
               elementwise=False, onnx_attributes=(("axis", -1),), torch="Softmax",
               torch_arguments=(("dim", -1),)),
    # exp: the rate of a Poisson output
    Activation("exp", 5, "cancels", "glorot", "Exp", "exp", False, True, capped=True),
)}

NAMES = tuple(ACTIVATIONS)
HIDDEN = tuple(a.name for a in ACTIVATIONS.values() if a.hidden)
OUTPUT = tuple(a.name for a in ACTIVATIONS.values() if a.output)
# those whose g' the kernels write through a (hidden layers, and mse outputs)
FROM_OUTPUT = tuple(a.name for a in ACTIVATIONS.values() if a.derivative == "from_output")
INIT = {a.name: a.init for a in ACTIVATIONS.values()}
CODES = {a.name: a.code for a in ACTIVATIONS.values()}


def _check_table():
    codes = [a.code for a in ACTIVATIONS.values()]
    assert len(set(codes)) == len(codes) and min(codes) >= 0, codes
    for a in ACTIVATIONS.values():
        assert a.derivative in DERIVATIVES and a.init in INITS, a
        assert a.hidden <= (a.derivative == "from_output"), a  # backprop needs g' from a


_check_table()


def code(name):
    """The kernels' integer code of activation ``name`` (``KeyError`` if unknown)."""
    return ACTIVATIONS[name].code


def sklearn_names(where):
    """scikit-learn's names of the activations usable in ``where`` (``"hidden"`` or
    ``"output"``), as a dict scikit-learn name -> gpubp name."""
    return {a.sklearn: a.name for a in ACTIVATIONS.values()
            if a.sklearn is not None and getattr(a, where)}


def check_activation(name, argument, allowed):
    """Return ``name`` if it is in ``allowed``, else raise a ``ValueError`` naming ``argument``."""
    if not isinstance(name, str):
        raise TypeError(f"{argument} must be a string, one of {allowed}; got {type(name).__name__}")
    if name not in allowed:
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
