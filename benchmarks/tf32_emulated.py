"""The error of ``precision="tf32"`` against exact float32, emulated on the CPU.

``python benchmarks/tf32_emulated.py`` needs no GPU. TF32 tensor-core math keeps float32's
exponent and 10 of its 23 mantissa bits for each GEMM input and sums the products in
float32. Here each input is rounded to TF32 bit for bit, in the two ways hardware does:
to nearest with ties away from zero (PTX ``cvt.rna.tf32.f32``, what cuBLAS applies), or
by truncation (what the MMA unit does to a float32 operand that was not converted first).
The rounded products are then summed in float64, which adds nothing to TF32's error at
these sizes.

It reports two figures:
- **GEMM error.** The 256 x 784 x 1024 product of ``benchmarks/gpu_check.py`` (``gemm_error``
  in its JSON, the same metric: max |error| / max |exact|), so the hardware figure can be
  compared with this one.
- **Training.** A digits network trained with every GEMM of the step in float32, then in
  emulated TF32 (the weight gradients included, an upper bound: small layers take gpubp's
  fused float32 kernel on a GPU). It gives the parameter drift and the test accuracy and
  loss of each. The figures are in docs/cuda.md, "Precision".
"""

import argparse
import copy
import types

import numpy as np

MANTISSA_DROPPED = 13  # float32 has 23 mantissa bits, TF32 10


def to_tf32(x, rounding="nearest"):
    """``x`` (float32) with its mantissa cut to TF32's 10 bits, as float32.

    Parameters
    ----------
    x : ndarray of float32
    rounding : {"nearest", "truncate"}
        Nearest with ties away from zero (``cvt.rna.tf32.f32``), or dropping the bits.
        Infinities and NaN pass through unchanged. A finite value that rounds past the
        largest TF32 number becomes inf, as the hardware conversion does.
    """
    if rounding not in ("nearest", "truncate"):
        raise ValueError(f"rounding must be 'nearest' or 'truncate', got {rounding!r}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    finite = np.isfinite(x)
    if rounding == "nearest":  # half of the last kept place, then drop: ties away from 0
        bits = np.where(finite, bits + np.uint32(1 << (MANTISSA_DROPPED - 1)), bits)
    mask = np.uint32(~((1 << MANTISSA_DROPPED) - 1) & 0xFFFFFFFF)
    kept = np.where(finite, bits & mask, bits)
    return kept.astype(np.uint32).view(np.float32)


def tf32_matmul(a, b, out=None, rounding="nearest"):
    """``a @ b`` of float32 inputs rounded to TF32, the products summed exactly (float64)."""
    product = to_tf32(a, rounding).astype(np.float64) @ to_tf32(b, rounding).astype(np.float64)
    if out is None:
        return product.astype(np.float32)
    out[...] = product
    return out


def gemm_errors(seed=0):
    """``{precision: max |C − C_64| / max |C_64|}`` on gpu_check's 256 x 784 x 1024 inputs."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(256, 784)), rng.normal(size=(784, 1024))
    want = a @ b
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    got = {"float32": (a32 @ b32).astype(np.float64),
           "tf32 (nearest)": tf32_matmul(a32, b32).astype(np.float64),
           "tf32 (truncate)": tf32_matmul(a32, b32, rounding="truncate").astype(np.float64)}
    return {k: float(np.abs(v - want).max() / np.abs(want).max()) for k, v in got.items()}


def _with_tf32_gemms(net, rounding):
    """``net`` with a private copy of its backend whose dense products round to TF32."""
    be = copy.copy(net.backend)

    def matmul(self, a, b, out):
        return tf32_matmul(a, b, out, rounding)

    def weight_bias_gradients(self, a_prev, delta, dW, db):
        tf32_matmul(a_prev.T, delta, dW, rounding)
        np.sum(delta, axis=0, out=db)

    be.matmul = types.MethodType(matmul, be)
    be.weight_bias_gradients = types.MethodType(weight_bias_gradients, be)
    net.backend = be
    return net


def training_drift(epochs=30, rounding="nearest", seed=0):
    """Exact float32 and emulated-TF32 training of one digits network from one start.

    Returns
    -------
    dict
        ``max_param_drift`` (max |θ_tf32 − θ_32| / max |θ_32|), and the test loss and
        accuracy of each run.
    """
    import gpubp  # imported here: the GEMM figures need only NumPy
    from gpubp import datasets

    data = datasets.load("digits")
    runs = {}
    for name in ("float32", "tf32"):
        net = gpubp.Network([64, 128, 10], hidden="relu", output="softmax",
                            loss="cross_entropy", dtype="float32", backend="reference",
                            seed=seed)
        if name == "tf32":
            _with_tf32_gemms(net, rounding)
        net.fit(data.X_train, data.y_train, epochs=epochs, batch_size=64, verbose=0,
                optimizer="adam", lr=1e-3)
        runs[name] = (net.theta.astype(np.float64),
                      net.evaluate(data.X_test, data.y_test))
    (t32, e32), (t_tf, e_tf) = runs["float32"], runs["tf32"]
    return {"max_param_drift": float(np.abs(t_tf - t32).max() / np.abs(t32).max()),
            "test_loss": {"float32": e32["loss"], "tf32": e_tf["loss"]},
            "test_accuracy": {"float32": e32["accuracy"], "tf32": e_tf["accuracy"]}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    print("GEMM 256x784x1024, max |error| / max |exact|:")
    for k, v in gemm_errors().items():
        print(f"  {k}: {v:.2e}")
    drift = training_drift(args.epochs)
    print(f"digits 64-128-10 relu, adam, {args.epochs} epochs, every GEMM in TF32 (nearest):")
    print(f"  max parameter drift {drift['max_param_drift']:.2e}")
    for k in ("float32", "tf32"):
        print(f"  {k}: test loss {drift['test_loss'][k]:.5f}, "
              f"accuracy {drift['test_accuracy'][k]:.4f}")


if __name__ == "__main__":
    main()
