"""The compiled epoch's kept ``g'(z)`` (gelu, gelu_tanh, silu): its forward pass writes
``g'(z^l)`` next to ``g(z^l)``, and its backward pass multiplies (and masks, with dropout).

Oracles: the loops the per-kernel step runs, which keep ``z`` and compute ``g'`` in the
backward pass (``cpu_activations.hidden_delta``, ``cpu_dropout._hidden_delta_drop``):
equal to the bit, awkward values included, but where the float64 g' of gelu_tanh on
float32 arrays is rounded once more (to the kept float32) before its multiply. Then whole
epochs: the compiled epoch against the per-kernel step.
"""

import numpy as np
import pytest

import gpubp
from gpubp.kernels import cpu_activations as CA
from gpubp.kernels import cpu_dropout as CD
from gpubp.kernels import dropout as D
from gpubp.optim.optimizers import Adam
from tests.test_dropout_loops import _assert_same_bits, _block, _hashing, _vector_loops

FROM_Z = {"gelu": CA.GELU, "gelu_tanh": CA.GELU_TANH, "silu": CA.SILU}


def _exact(activation, dtype):
    """Whether the kept g' multiplies as the per-kernel loop's does, to the bit."""
    return not (activation == "gelu_tanh" and dtype == np.float32)


def _assert_close_or_same(got, want, activation, dtype):
    if _exact(activation, dtype):
        _assert_same_bits(got, want)
    else:  # g', δ g' and × 1/(1 − p) each rounded to float32 (2^-24 relative each) where
        # the per-kernel loop rounds δ g' / (1 − p) once, from float64: 4 x 2^-24 at most
        np.testing.assert_allclose(got, want, rtol=2 ** -22, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", sorted(FROM_Z))
@pytest.mark.parametrize("shape", [(37, 13), (1, 16), (2, 513)])
def test_the_kept_g_prime_is_the_backward_passs(dtype, activation, shape):
    code = FROM_Z[activation]
    rng = np.random.default_rng(shape[1])
    z = (4 * rng.normal(size=shape)).astype(dtype)
    z.reshape(-1)[:5] = [np.inf, -np.inf, np.nan, 0.0, -30.0][:z.size]
    b = rng.normal(size=shape[1]).astype(dtype)
    delta = rng.normal(size=shape).astype(dtype)
    a_old, z_old = z.copy(), np.empty_like(z)
    CA.bias_activation(a_old, b, code, 0.01, z_old)  # the per-kernel forward: keeps z
    a_new, kept = z.copy(), np.empty_like(z)
    CA.bias_activation_prime(a_new, b, code, 0.01, kept)
    _assert_same_bits(a_new, a_old)  # g(z) as before
    want, got = delta.copy(), delta.copy()
    CA.hidden_delta(want, z_old, code, 0.01)
    CA.kept_delta(got, kept)
    _assert_close_or_same(got, want, activation, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", sorted(FROM_Z))
@pytest.mark.parametrize("p", [0.2, 0.9])
def test_the_masked_delta_from_the_kept_g_prime(dtype, activation, p):
    """With dropout, δ from the kept g' is the masked δ kernel's from ``z``: a dropped entry
    exactly +0 whatever δ is (inf and NaN included), a kept one ``δ g' / (1 − p)``."""
    shape = (29, 37)
    drop = D.layer_drop(0xC0FFEE + shape[1], 1, p)
    mask = D.kept(drop, shape)
    z, delta = _block(dtype, mask, 3)
    code, zero_b = FROM_Z[activation], np.zeros(shape[1], dtype)
    key, threshold, scale = np.uint64(drop.key), np.uint64(drop.threshold), dtype(drop.scale)
    want = delta.copy()
    CD._hidden_delta_drop(want, z, code, 0.01, key, threshold, dtype(1), scale)
    kept = np.empty_like(z)
    CA.bias_activation_prime(z.copy(), zero_b, code, 0.01, kept)
    got = delta.copy()
    CD.kept_delta_drop(got, kept, key, threshold, scale)
    assert (got[~mask] == 0).all() and not np.signbit(got[~mask]).any()
    assert np.isinf(delta[~mask]).any() and np.isnan(delta[~mask]).any()  # dropped: still 0
    with np.errstate(invalid="ignore"):  # inf · 0 at a kept entry is NaN, as in the loops
        twin = np.where(mask, (delta * kept) * scale, dtype(0))  # IEEE products, in order
    _assert_same_bits(got, twin)
    if dtype == np.float64:
        _assert_same_bits(got, want)
    else:  # the per-kernel loop's g' in a loop of its own, contracted (FMA) otherwise, and
        # gelu_tanh's float64 g' rounded once more (see _assert_close_or_same): 2^-22
        live = np.isfinite(want) & np.isfinite(got)
        np.testing.assert_allclose(got[live], want[live], rtol=2 ** -22, atol=0)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_kept_loops_vectorise(dtype):
    """The backward passes from the kept g' run as vector loops, the mask's hash too."""
    kind = "float" if dtype == np.float32 else "double"
    a = np.ones((2, 64), dtype)
    key, threshold, one = np.uint64(5), np.uint64(D.threshold(0.2)), dtype(1)
    CD.kept_delta_drop(a, a.copy(), key, threshold, one)
    CA.kept_delta(a, a.copy())

    def ir_of(fn):
        return next(ir for sig, ir in fn.inspect_llvm().items()
                    if str(sig[0].dtype) == np.dtype(dtype).name)

    masked = _vector_loops(ir_of(CD.kept_delta_drop))
    assert len(masked) == 1 and _hashing(masked[0], kind)  # the mask drawn in vectors
    for fn in (CD.kept_delta_drop, CA.kept_delta):
        assert any(f"fmul <" in body and f" x {kind}>" in body
                   for body in _vector_loops(ir_of(fn)))


def _fit(backend_opt, activation, dtype, dropout):
    rng = np.random.default_rng(1)
    X, y = 2 * rng.normal(size=(70, 6)), rng.integers(0, 3, 70)
    net = gpubp.Network([6, 9, 7, 3], hidden=[activation, activation], dropout=dropout,
                        seed=5, backend="cpu", dtype=dtype)
    h = net.fit(X, y, epochs=2, batch_size=16, verbose=0, optimizer=backend_opt())
    return np.concatenate([w.ravel() for w in net.get_params()[0]]), h.history["loss"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", sorted(FROM_Z))
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_the_compiled_epoch_trains_as_the_per_kernel_step(dtype, activation, dropout,
                                                          monkeypatch):
    from gpubp.core import compiled  # the epoch's entry point, watched to be sure it ran
    calls = []
    original = compiled.train_epoch
    monkeypatch.setattr(compiled, "train_epoch",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    theta, loss = _fit(Adam, activation, dtype, dropout)
    assert calls
    calls.clear()
    theta_k, loss_k = _fit(lambda: type("PerKernelAdam", (Adam,), {})(), activation, dtype,
                           dropout)
    assert not calls
    # the same δ to the bit (above); Adam's per-layer order differs in the last bit
    tol = 1e-5 if dtype == "float32" else 1e-13
    np.testing.assert_allclose(theta, theta_k, rtol=tol, atol=tol)
    np.testing.assert_allclose(loss, loss_k, rtol=tol)
