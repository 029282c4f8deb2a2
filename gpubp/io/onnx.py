"""Export a network to ONNX, so that any ONNX runtime can serve it.

The graph is the forward pass of ``docs/design.md`` section 1, one layer at a time::
    X ─(Sub mean, Div std)─ a^0 ─MatMul W^1─Add b^1─g─ a^1 ─ … ─ a^L = "output"

where each ``g`` is the operator of its row of :data:`gpubp.activations.ACTIVATIONS`
(``exp`` as ``Exp(Min(z, EXP_CAP))``, capped as the kernels cap it).

with input ``"X"`` of shape ``(N, n_0)`` (``N`` a dynamic batch dimension) and output
``"output"`` of shape ``(N, n_L)``: the output activations, i.e. :meth:`Network.forward`
(class probabilities for classifiers). The optional scaling step lets a model trained on
standardised features (``gpubp train`` stores its scaler) take raw features. The element
type is the network's dtype (float32 or float64). Every node is a standard ``ai.onnx``
operator of opset :data:`OPSET`; the model is checked with ``onnx.checker`` before it is
written, atomically (temporary file and rename, as :func:`gpubp.io.model.save`).

Requires the ``onnx`` package (``pip install "gpubp[onnx]"``).
"""

import os

import numpy as np

from gpubp.activations import ACTIVATIONS
from gpubp.io.atomic import atomic_write, check_output_path
from gpubp.kernels.reference import EXP_CAP
from gpubp.optional import require
from gpubp.version import __version__

OPSET = 21  # ONNX 1.16 (2024); onnxruntime >= 1.18 runs it
IR_VERSION = 10  # the IR version of opset 21


def _onnx():
    return require("onnx", "onnx", "ONNX export")


def to_onnx_model(net, scaler=None, metadata=None):
    """The ONNX ``ModelProto`` of ``net``'s forward pass.

    Parameters
    ----------
    net : Network
    scaler : tuple (mean, std) of array-like, shape (n_0,), or None
        Standardise the input first: ``a^0 = (X − mean) / std``.
    metadata : dict of str to str or None
        Extra ``metadata_props`` of the model (e.g. class names).

    Returns
    -------
    onnx.ModelProto
    """
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper  # optional: onnx

    dtype = net.dtype
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    W, b = net.get_params()
    nodes, inits = [], []
    current = "X"
    if scaler is not None:
        mean, std = (np.asarray(v, dtype=dtype).reshape(-1) for v in scaler)
        if mean.shape != (net.sizes[0],) or std.shape != (net.sizes[0],):
            raise ValueError(f"scaler must hold a mean and a std of shape ({net.sizes[0]},), "
                             f"got {mean.shape} and {std.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std != 0).all()):
            raise ValueError("scaler must be finite with a non-zero std")
        inits += [numpy_helper.from_array(mean, "scaler_mean"),
                  numpy_helper.from_array(std, "scaler_std")]
        nodes += [helper.make_node("Sub", ["X", "scaler_mean"], ["X_centred"]),
                  helper.make_node("Div", ["X_centred", "scaler_std"], ["a0"])]
        current = "a0"
    for l in range(1, net.L + 1):
        g = net.activation_names[l - 1]
        inits += [numpy_helper.from_array(W[l - 1], f"W{l}"),
                  numpy_helper.from_array(b[l - 1], f"b{l}")]
        out = "output" if l == net.L else f"a{l}"
        nodes += [helper.make_node("MatMul", [current, f"W{l}"], [f"xW{l}"]),
                  helper.make_node("Add", [f"xW{l}", f"b{l}"], [f"z{l}"])]
        nodes += _activation_nodes(ACTIVATIONS[g], f"z{l}", out, l, dtype, inits)
        current = out
    graph = helper.make_graph(
        nodes, "gpubp_network",
        inputs=[helper.make_tensor_value_info("X", elem, ["N", net.sizes[0]])],
        outputs=[helper.make_tensor_value_info("output", elem, ["N", net.sizes[-1]])],
        initializer=inits)
    model = helper.make_model(graph, producer_name="gpubp", ir_version=IR_VERSION,
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.producer_version = __version__
    model.doc_string = (f"gpubp network {'-'.join(map(str, net.sizes))}: hidden "
                        f"{net.hidden}, output {net.output}, loss {net.loss_name}")
    props = {"sizes": ",".join(map(str, net.sizes)), "hidden": ",".join(net.hidden),
             "output": net.output, "loss": net.loss_name, **(metadata or {})}
    helper.set_model_props(model, {str(k): str(v) for k, v in props.items()})
    onnx.checker.check_model(model, full_check=True)
    return model


def _activation_nodes(activation, z, out, l, dtype, inits):
    """The nodes applying ``activation`` (a row of :data:`gpubp.activations.ACTIVATIONS`) to
    ``z``, named ``out``: its operator and attributes, after ``Min(z, EXP_CAP)`` for a
    capped one, as the kernels compute it (the cap a constant appended to ``inits``)."""
    from onnx import helper, numpy_helper  # optional dependency, checked by _onnx()

    nodes = []
    if activation.capped:
        inits.append(numpy_helper.from_array(np.array(EXP_CAP[np.dtype(dtype)], dtype),
                                             f"cap{l}"))
        nodes.append(helper.make_node("Min", [z, f"cap{l}"], [f"{z}_capped"]))
        z = f"{z}_capped"
    nodes.append(helper.make_node(activation.onnx, [z], [out],
                                  **dict(activation.onnx_attributes)))
    return nodes


def to_onnx(net, path, scaler=None, metadata=None):
    """Write ``net`` to ``path`` as an ONNX model, atomically; see :func:`to_onnx_model`.

    Returns
    -------
    str
        ``path``.
    """
    path = os.fspath(path)
    check_output_path(path, "path")  # before the work, naming the user's path
    data = to_onnx_model(net, scaler, metadata).SerializeToString()
    atomic_write(path, lambda f: f.write(data))
    return path
