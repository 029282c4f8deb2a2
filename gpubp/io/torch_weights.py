"""Networks to and from PyTorch: ``nn.Sequential`` of ``nn.Linear`` and activation modules.

gpubp's ``W^l`` is ``(n_{l-1}, n_l)`` (``z = a W + b``); ``torch.nn.Linear.weight`` is
``(n_l, n_{l-1})`` (``z = a Wᵀ + b``), so each weight crosses transposed and the outputs
agree to rounding. The activation modules are the ``torch`` column of the activation
table (:mod:`gpubp.activations`): an activation gains PyTorch interop by its row alone.
A hidden layer without an activation module (two ``Linear`` in a row, or ``nn.Identity``)
is ``identity``. Needs ``torch`` (``gpubp[torch]``).
"""

import numpy as np

from gpubp import activations
from gpubp.core.network import Network
from gpubp.optional import require

_DTYPES = ("float32", "float64")


def _torch():
    # optional: PyTorch (gpubp[torch]), loaded only for the conversion
    return require("torch", "torch", "PyTorch conversion")


def _module(nn, name):
    """The ``torch.nn`` module applying activation ``name``, or a ValueError."""
    row = activations.ACTIVATIONS[name]
    if row.torch is None:
        supported = [a.name for a in activations.ACTIVATIONS.values() if a.torch]
        raise ValueError(f"to_torch(): activation {name!r} has no torch.nn module; "
                         f"convertible activations: {supported}")
    return getattr(nn, row.torch)(**dict(row.torch_arguments))


def to_torch(net):
    """``net`` as a ``torch.nn.Sequential`` of ``Linear`` and activation modules, on the CPU
    in ``net``'s dtype; ``identity`` layers get no module (two ``Linear`` in a row)."""
    torch = _torch()
    nn = torch.nn
    W, b = net.get_params()
    layers = []
    for name, w, v in zip(net.activation_names, W, b):
        linear = nn.Linear(w.shape[0], w.shape[1], dtype=getattr(torch, net.dtype.name))
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
            linear.bias.copy_(torch.from_numpy(v))
        layers.append(linear)
        if name != "identity":
            layers.append(_module(nn, name))
    return nn.Sequential(*layers)


def _activation_of(module):
    """The gpubp name of activation ``module`` (a ``torch.nn`` instance), or a ValueError.

    A class may be several rows (``GELU``: gelu, gelu_tanh): the row whose
    ``torch_arguments`` the module's attributes match."""
    rows = [row for row in activations.ACTIVATIONS.values()
            if row.torch is not None and type(module).__name__ == row.torch
            and type(module).__module__.startswith("torch.nn")]
    mismatch = None
    for row in rows:
        for attr, value in row.torch_arguments:
            got = getattr(module, attr, None)
            if not (got == value or (attr == "dim" and {got, value} == {1, -1})):
                mismatch = mismatch or (f"module: {module!r} must have {attr}={value!r} to "
                                        f"be gpubp's {row.name!r}, got {attr}={got!r}")
                break
        else:
            return row.name
    if mismatch:
        raise ValueError(mismatch)
    supported = ["Linear"] + [a.torch for a in activations.ACTIVATIONS.values() if a.torch]
    raise ValueError(f"module: from_torch() reads nn.Sequential of {supported}; got "
                     f"{type(module).__name__} ({module!r})")


def _layers(torch, module):
    """``[(weight, bias, activation or None), ...]`` of the Sequential ``module``."""
    if not isinstance(module, torch.nn.Sequential):
        raise TypeError(f"module must be a torch.nn.Sequential, got {type(module).__name__}")
    layers = []
    for child in module:
        if isinstance(child, torch.nn.Linear):
            weight = child.weight.detach().cpu().numpy().T
            bias = np.zeros(weight.shape[1], weight.dtype) if child.bias is None else \
                child.bias.detach().cpu().numpy()
            if layers and layers[-1][0].shape[1] != weight.shape[0]:
                raise ValueError(f"module: a Linear of in_features={weight.shape[0]} follows "
                                 f"one of out_features={layers[-1][0].shape[1]}")
            layers.append([weight, bias, None])
            continue
        name = _activation_of(child)
        if not layers:
            raise ValueError(f"module must start with a Linear layer, got {child!r} first")
        if name == "identity":
            continue
        if layers[-1][2] is not None:
            raise ValueError(f"module: two activations after one Linear ({layers[-1][2]!r} "
                             f"then {name!r})")
        layers[-1][2] = name
    if not layers:
        raise ValueError("module holds no Linear layer")
    return layers


def from_torch(module, output=None, loss=None, **network_options):
    """A :class:`gpubp.Network` with the layers and weights of a PyTorch ``nn.Sequential``.

    Parameters
    ----------
    module : torch.nn.Sequential
        ``Linear`` layers, each followed by at most one activation module of the table's
        ``torch`` column (``Sigmoid``, ``Tanh``, ``ReLU``, ``Identity``, ``Softmax``...).
    output : str or None
        The output activation when ``module`` ends in a ``Linear`` (e.g. ``"softmax"`` for
        a classifier whose logits PyTorch fed to ``CrossEntropyLoss``); None: the final
        module's (``identity`` after a ``Linear``). Given with a final activation module,
        it must name the same one.
    loss : str or None
        As :class:`gpubp.Network`'s (None: the output's canonical loss).
    **network_options
        Further :class:`gpubp.Network` options (``device``, ``dtype``, ``seed``, ...). The
        dtype defaults to the weights' (float32 or float64).

    Returns
    -------
    Network
        Whose :meth:`~gpubp.Network.forward` equals ``module(X)`` to rounding.
    """
    torch = _torch()
    layers = _layers(torch, module)
    final = layers[-1][2]
    if output is not None and final is not None and output != final:
        raise ValueError(f"output={output!r}, but module ends in {final!r}")
    output = output or final or "identity"
    dtype = str(layers[0][0].dtype)
    if "dtype" not in network_options and dtype not in _DTYPES:
        raise ValueError(f"module: weights must be float32 or float64, got {dtype} "
                         f"(convert with module.float() or module.double())")
    network_options.setdefault("dtype", dtype)
    sizes = [layers[0][0].shape[0]] + [w.shape[1] for w, _, _ in layers]
    hidden = [g or "identity" for _, _, g in layers[:-1]] or "sigmoid"
    net = Network(sizes, hidden=hidden, output=output, loss=loss, **network_options)
    net.set_params([w.astype(net.dtype) for w, _, _ in layers],
                   [v.astype(net.dtype) for _, v, _ in layers])
    return net
