"""The activation table: every activation name once, with all that its consumers need.

The functions themselves are kernels (``gpubp.kernels.reference`` and its fused twins);
this module is the one table that the network validates its arguments against and that
every consumer derives its names from: the kernels of every target take their integer
codes from it, ONNX export its operators, the scikit-learn estimators their names, the
command line its help. ``tests/test_tables.py`` runs every row through every consumer.

===========  ====  ===========  ============  =========  ===========  ======  ======
name         code  derivative   init          onnx       sklearn      hidden  output
===========  ====  ===========  ============  =========  ===========  ======  ======
sigmoid      0     from_output  glorot_unif.  Sigmoid    logistic     yes     yes
tanh         1     from_output  glorot_unif.  Tanh       tanh         yes     yes
relu         2     from_output  he_normal     Relu       relu         yes     yes
identity     3     from_output  glorot_unif.  Identity   identity     yes     yes
softmax      4     cancels      glorot_unif.  Softmax    softmax      no      yes
exp          5     cancels      glorot_unif.  Exp        exp          no      yes
leaky_relu   6     from_output  he_normal     LeakyRelu  leaky_relu   yes     no
elu          7     from_output  he_normal     Elu        elu          yes     no
selu         8     from_output  lecun_normal  Selu       selu         yes     no
softplus     9     from_output  he_normal     Softplus   softplus     yes     no
gelu         10    from_z       he_normal     (Erf)      gelu         yes     no
gelu_tanh    11    from_z       he_normal     (Tanh)     gelu_tanh    yes     no
silu         12    from_z       he_normal     (Sigmoid)  silu         yes     no
===========  ====  ===========  ============  =========  ===========  ======  ======

``derivative``: ``"from_output"``, ``g'(z)`` written through the output ``a = g(z)``
(sigmoid ``a(1−a)``, tanh ``1−a²``, relu ``a>0``, identity ``1``, leaky_relu ``1`` or the
slope, elu ``1`` or ``a + 1``, selu ``λ`` or ``a + λα``, softplus ``1 − e^{−a}``), so
``z`` need not be stored; ``"from_z"``, ``g'`` needs ``z`` itself (gelu, gelu_tanh, silu:
``z`` is kept for those layers only, :mod:`gpubp.core.backprop`); ``"cancels"``, no ``g'``
of its own: the activation is an output paired with its canonical loss
(``gpubp.losses``), where ``g_o'`` cancels with ``∂c/∂a`` and ``δ^L = (a − y)/P``.

The formulas are PyTorch's (``torch.nn.functional``): ``leaky_relu`` with
``negative_slope`` (``Network(negative_slope=...)``, default :data:`NEGATIVE_SLOPE`),
``elu`` with ``α = 1``, ``selu`` with PyTorch's ``λ`` and ``α`` (:data:`SELU_SCALE`,
:data:`SELU_ALPHA`), ``softplus`` with ``β = 1`` (exact: no ``threshold``, computed as
``max(z, 0) + log1p(e^{−|z|})``), ``gelu`` exact (``z Φ(z)``, the erf form,
``approximate="none"``), ``gelu_tanh`` its tanh approximation (``approximate="tanh"``),
``silu`` ``z σ(z)``. The new rows are hidden activations only; (Erf), (Tanh), (Sigmoid):
ONNX has no operator of their own at :data:`gpubp.io.onnx.OPSET`, the export composes
them from that one (``gpubp.io.onnx``). The ``sklearn`` column is the name the estimators'
``activation=`` takes (scikit-learn itself knows only the first five).

``init``: the default initial weights of a layer feeding the activation (``Network(init=...)``
overrides it, :data:`INITS`): Glorot/Xavier keeps the variance of sigmoid, tanh and
linear units roughly constant through the layers; He doubles it to make up for the half of
a rectifier's inputs set to (nearly) zero: the ReLU family, here relu, leaky_relu, elu and
the smooth rectifiers softplus, gelu, gelu_tanh and silu; LeCun normal is what selu's
self-normalisation assumes. Glorot is uniform and He normal, as before these rows came.
"""

from dataclasses import dataclass
import difflib
import numbers
import math

DERIVATIVES = ("from_output", "from_z", "cancels")
# init= names, each (distribution, variance numerator, fan): Var W = gain / fan
INITS = {
    "glorot_uniform": ("uniform", 1.0, "fan_avg"),
    "glorot_normal": ("normal", 1.0, "fan_avg"),
    "he_uniform": ("uniform", 2.0, "fan_in"),
    "he_normal": ("normal", 2.0, "fan_in"),
    "lecun_normal": ("normal", 1.0, "fan_in"),
}
NEGATIVE_SLOPE = 0.01  # leaky_relu's default, PyTorch's
# selu's constants, PyTorch's (Klambauer et al., 2017)
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


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
        A key of :data:`INITS`: the default initial weights of a layer feeding it.
    onnx : str
        The ``ai.onnx`` operator applying it to ``z`` (for a composed one, the operator
        the composition is built around; see ``gpubp.io.onnx``).
    sklearn : str or None
        The estimators' name for it (``activation`` / ``out_activation_``), or None.
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
    kink : bool
        ``g'`` jumps at ``z = 0`` (relu, leaky_relu, selu): a central difference across
        it is no derivative (``gpubp.core.gradcheck`` leaves such entries out).
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
    kink: bool = False


ACTIVATIONS = {a.name: a for a in (
    Activation("sigmoid", 0, "from_output", "glorot_uniform", "Sigmoid", "logistic", True, True,
               torch="Sigmoid"),
    Activation("tanh", 1, "from_output", "glorot_uniform", "Tanh", "tanh", True, True,
               torch="Tanh"),
    Activation("relu", 2, "from_output", "he_normal", "Relu", "relu", True, True, kink=True,
               torch="ReLU"),
    Activation("identity", 3, "from_output", "glorot_uniform", "Identity", "identity", True,
               True, torch="Identity"),
    Activation("softmax", 4, "cancels", "glorot_uniform", "Softmax", "softmax", False, True,
               elementwise=False, onnx_attributes=(("axis", -1),), torch="Softmax",
               torch_arguments=(("dim", -1),)),
    # exp: the rate of a Poisson output
    Activation("exp", 5, "cancels", "glorot_uniform", "Exp", "exp", False, True, capped=True),
    # the slope of leaky_relu is the network's negative_slope (the ONNX node takes it)
    Activation("leaky_relu", 6, "from_output", "he_normal", "LeakyRelu", "leaky_relu", True,
               False, kink=True),
    Activation("elu", 7, "from_output", "he_normal", "Elu", "elu", True, False,
               onnx_attributes=(("alpha", 1.0),), torch="ELU", torch_arguments=(("alpha", 1.0),)),
    Activation("selu", 8, "from_output", "lecun_normal", "Selu", "selu", True, False,
               onnx_attributes=(("alpha", SELU_ALPHA), ("gamma", SELU_SCALE)), kink=True,
               torch="SELU"),
    Activation("softplus", 9, "from_output", "he_normal", "Softplus", "softplus", True, False,
               torch="Softplus", torch_arguments=(("beta", 1.0),)),
    Activation("gelu", 10, "from_z", "he_normal", "Erf", "gelu", True, False, torch="GELU",
               torch_arguments=(("approximate", "none"),)),
    Activation("gelu_tanh", 11, "from_z", "he_normal", "Tanh", "gelu_tanh", True, False,
               torch="GELU", torch_arguments=(("approximate", "tanh"),)),
    Activation("silu", 12, "from_z", "he_normal", "Sigmoid", "silu", True, False,
               torch="SiLU"),
)}

NAMES = tuple(ACTIVATIONS)
HIDDEN = tuple(a.name for a in ACTIVATIONS.values() if a.hidden)
OUTPUT = tuple(a.name for a in ACTIVATIONS.values() if a.output)
# those whose g' the kernels write through a (hidden layers, and mse outputs)
FROM_OUTPUT = tuple(a.name for a in ACTIVATIONS.values() if a.derivative == "from_output")
# those whose g' needs z: their layers keep z (hidden layers only)
FROM_Z = tuple(a.name for a in ACTIVATIONS.values() if a.derivative == "from_z")
INIT = {a.name: a.init for a in ACTIVATIONS.values()}
CODES = {a.name: a.code for a in ACTIVATIONS.values()}


def _check_table():
    codes = [a.code for a in ACTIVATIONS.values()]
    assert len(set(codes)) == len(codes) and min(codes) >= 0, codes
    for a in ACTIVATIONS.values():
        assert a.derivative in DERIVATIVES and a.init in INITS, a
        # backprop needs g' from a or z; an output's g' (mse) is written through a
        assert a.hidden <= (a.derivative != "cancels"), a
        assert a.output <= (a.derivative != "from_z"), a


_check_table()


def code(name):
    """The kernels' integer code of activation ``name`` (``KeyError`` if unknown)."""
    return ACTIVATIONS[name].code


def keeps_z(name):
    """Whether a layer with activation ``name`` keeps ``z`` for its ``g'``."""
    return ACTIVATIONS[name].derivative == "from_z"


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
        alias = {"linear": "identity", "none": "identity", "logistic": "sigmoid",
                 "swish": "silu", "leakyrelu": "leaky_relu"}.get(name.lower())
        close = [alias] if alias in allowed else \
            difflib.get_close_matches(name.lower(), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{argument} must be one of {allowed}, got {name!r}{hint}")
    return name


def check_negative_slope(negative_slope, activation_names):
    """leaky_relu's slope as a float: ``negative_slope`` (None: :data:`NEGATIVE_SLOPE`)
    where a layer is leaky_relu, None where none is (a slope given then is refused: it
    would be ignored)."""
    leaky = "leaky_relu" in activation_names
    if negative_slope is None:
        return NEGATIVE_SLOPE if leaky else None
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real):
        raise TypeError(f"negative_slope must be a real number >= 0, got {negative_slope!r}")
    if not (math.isfinite(negative_slope) and negative_slope >= 0):
        # g' is read from a: only a slope >= 0 keeps the sign of z in a
        raise ValueError(f"negative_slope must be finite and >= 0, got {negative_slope!r}")
    if not leaky:
        raise ValueError(f"negative_slope applies to leaky_relu layers only; the activations "
                         f"are {list(activation_names)}, got negative_slope={negative_slope!r}")
    return float(negative_slope)


def check_init(init):
    """``init`` (a key of :data:`INITS`, a callable, or None) checked."""
    if init is None or callable(init):
        return init
    if not isinstance(init, str):
        raise TypeError(f"init must be one of {tuple(INITS)}, a callable (shape, rng) -> "
                        f"array, or None; got {type(init).__name__}")
    if init not in INITS:
        # PyTorch's and Keras's spellings of the same rules
        alias = {"he": "he_normal", "kaiming": "he_normal", "kaiming_normal": "he_normal",
                 "kaiming_uniform": "he_uniform", "glorot": "glorot_uniform",
                 "xavier": "glorot_uniform", "xavier_uniform": "glorot_uniform",
                 "xavier_normal": "glorot_normal", "lecun": "lecun_normal"}.get(init.lower())
        close = [alias] if alias else difflib.get_close_matches(init.lower(), INITS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"init must be one of {tuple(INITS)}, a callable or None, got "
                         f"{init!r}{hint}")
    return init


def init_weights(rng, fan_in, fan_out, activation, dtype, init=None):
    """Seeded initial weights of shape ``(fan_in, fan_out)`` for a layer feeding ``activation``.

    ``init`` (None: the activation's row) names the rule of :data:`INITS`: variance
    ``gain / fan`` with ``fan`` the inputs (``fan_in``) or the mean of inputs and outputs
    (``fan_avg``), drawn uniform on ``±sqrt(3 gain / fan)`` or normal (PyTorch's
    ``xavier_*_``/``kaiming_*_``, untruncated); e.g. Glorot uniform
    ``U(±sqrt(6 / (fan_in + fan_out)))``, He normal ``N(0, 2 / fan_in)``. Drawn in float64
    then cast, so that float32 and float64 networks built with the same seed start from the
    same point. A callable ``init(shape, rng)`` returns the array itself (checked by the
    caller).
    """
    if callable(init):
        return init((fan_in, fan_out), rng)
    kind, gain, fan = INITS[init or INIT[activation]]
    n = fan_in if fan == "fan_in" else (fan_in + fan_out) / 2  # exact: a half-integer
    if kind == "normal":
        W = rng.normal(0.0, (gain / n) ** 0.5, size=(fan_in, fan_out))
    else:  # one rounding, as sqrt(6 / (fan_in + fan_out)) for Glorot
        limit = (3 * gain / n) ** 0.5
        W = rng.uniform(-limit, limit, size=(fan_in, fan_out))
    return W.astype(dtype)
