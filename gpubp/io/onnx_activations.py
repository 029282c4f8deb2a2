"""The ONNX nodes of the activations that opset 21 has no operator for, or onnxruntime
no double-precision kernel for: the formulas of :mod:`gpubp.kernels.reference` built
from elementwise operators that every runtime has in both float32 and float64.

========== ==================================================  ======================
name       graph                                               float32 graph
========== ==================================================  ======================
leaky_relu Where(z > 0, z, s z)                                LeakyRelu(alpha=s)
elu        Where(z > 0, z, Exp(Min(z, 0)) − 1)                 Elu(alpha=1)
selu       Where(z > 0, λ z, λα (Exp(Min(z, 0)) − 1))           Selu(alpha, gamma)
softplus   Max(z, 0) + Log(1 + Exp(−|z|))                      Softplus
gelu       ½ z (1 + Erf(z / √2))                               the same
gelu_tanh  ½ z (1 + Tanh(√(2/π) (c + 0.044715 c³))),           the same
           c = Clip(z, ±GELU_TANH_CLAMP)
silu       z Sigmoid(z)                                        the same
========== ==================================================  ======================

onnxruntime has no float64 ``Erf``: a float64 gelu graph computes its ``Erf`` in float32
(``Cast`` there and back), so it agrees with :meth:`Network.forward` to about 1e-7
relative, not to the last bit (the rest of a float64 graph does).
"""

import numpy as np

from gpubp.kernels import reference as R

# float32 graphs take these activations' own operators (onnxruntime has float32 kernels)
NATIVE_FLOAT32 = ("leaky_relu", "elu", "selu", "softplus")
COMPOSED = ("leaky_relu", "elu", "selu", "softplus", "gelu", "gelu_tanh", "silu")


class _Graph:
    """Nodes and constants appended under names unique to layer ``l``."""

    def __init__(self, l, dtype, inits):
        from onnx import helper, numpy_helper  # optional dependency, checked by onnx._onnx()

        self.helper, self.numpy_helper = helper, numpy_helper
        self.l, self.dtype, self.inits, self.nodes, self.count = l, dtype, inits, [], 0
        self.names = set()

    def const(self, value):
        """The name of a constant ``value`` of the dtype (one initializer per value)."""
        name = f"act{self.l}_{value!r}".replace("-", "m")
        if name not in self.names:
            self.names.add(name)
            self.inits.append(self.numpy_helper.from_array(np.array(value, self.dtype), name))
        return name

    def drop_unused(self):
        """Forget the constants no node reads (onnxruntime warns of them)."""
        read = {name for node in self.nodes for name in node.input}
        self.inits[:] = [t for t in self.inits if t.name in read or t.name not in self.names]

    def op(self, op_type, *inputs, out=None, **attributes):
        self.count += 1
        out = out or f"act{self.l}_t{self.count}"
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], **attributes))
        return out


def composed(name, dtype):
    """Whether a graph of ``dtype`` composes activation ``name`` (else: its operator)."""
    return name in COMPOSED and not (np.dtype(dtype) == np.float32 and name in NATIVE_FLOAT32)


def composed_nodes(name, z, out, l, dtype, inits, slope):
    """The nodes computing activation ``name`` of ``z`` into ``out`` (constants appended
    to ``inits``), for a network of ``dtype``; ``slope``: leaky_relu's."""
    g = _Graph(l, dtype, inits)
    zero, one = g.const(0.0), g.const(1.0)
    if name in ("leaky_relu", "elu", "selu"):
        positive = g.op("Greater", z, zero)
        if name == "leaky_relu":
            g.op("Where", positive, z, g.op("Mul", z, g.const(slope)), out=out)
        else:
            # e^z of z <= 0 only: never overflows
            neg = g.op("Sub", g.op("Exp", g.op("Min", z, zero)), one)
            if name == "elu":
                g.op("Where", positive, z, neg, out=out)
            else:
                g.op("Where", positive, g.op("Mul", z, g.const(R.LAMBDA)),
                     g.op("Mul", neg, g.const(R.LAMBDA_ALPHA)), out=out)
    elif name == "softplus":
        tail = g.op("Log", g.op("Add", one, g.op("Exp", g.op("Neg", g.op("Abs", z)))))
        g.op("Add", g.op("Max", z, zero), tail, out=out)
    elif name == "silu":
        g.op("Mul", z, g.op("Sigmoid", z), out=out)
    else:  # gelu, gelu_tanh
        g.op("Mul", g.op("Mul", g.const(0.5), z), g.op("Add", one, _gelu_factor(g, name, z)),
             out=out)
    g.drop_unused()
    return g.nodes


def _gelu_factor(g, name, z):
    """``erf(z / √2)`` (gelu) or ``tanh(√(2/π) (c + 0.044715 c³))`` (gelu_tanh)."""
    if name == "gelu":
        scaled = g.op("Mul", z, g.const(R.SQRT_HALF))
        if np.dtype(g.dtype) == np.float32:
            return g.op("Erf", scaled)
        from onnx import TensorProto  # optional dependency, checked by onnx._onnx()

        erf = g.op("Erf", g.op("Cast", scaled, to=TensorProto.FLOAT))  # no float64 Erf
        return g.op("Cast", erf, to=TensorProto.DOUBLE)
    c = g.op("Clip", z, g.const(-R.GELU_TANH_CLAMP), g.const(R.GELU_TANH_CLAMP))
    cube = g.op("Mul", g.op("Mul", c, c), c)
    inner = g.op("Add", c, g.op("Mul", g.const(R.GELU_TANH_C), cube))
    return g.op("Tanh", g.op("Mul", g.const(R.SQRT_2_OVER_PI), inner))
