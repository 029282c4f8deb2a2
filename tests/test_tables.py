"""Every row of the activation and loss tables through every consumer.

The cases are drawn from the tables themselves (``tests/table_cases.py``), so a row added
to :data:`gpubp.activations.ACTIVATIONS` or :data:`gpubp.losses.LOSSES` is run, without
editing a test, through: the network's argument checks, forward on the reference and cpu
backends, a training epoch on both, the compiled epoch against the per-kernel steps, the
CUDA kernels (in the simulator), ONNX export against onnxruntime, the scikit-learn
estimators' names, the command line's help and its gradient check.
"""

import numpy as np
import pytest

import gpubp
from gpubp import activations, losses
from gpubp.cli.commands import build_parser, main
from gpubp.core import compiled
from gpubp.optim.optimizers import SGD
from tests.conftest import randomize_biases
from tests.table_cases import ACTIVATIONS, CASES, HIDDEN, LOSSES, OUTPUT, PAIRS, case_id, problem

ACTIVATION_IDS = [a.name for a in ACTIVATIONS]
LOSS_IDS = [l.name for l in LOSSES]
TOL = {"float64": dict(rtol=1e-12, atol=1e-12), "float32": dict(rtol=2e-5, atol=2e-6)}


def _net(case, backend, dtype="float64", sizes=(4, 5, 3), seed=3):
    hidden, output, loss = case
    return randomize_biases(gpubp.Network(list(sizes), hidden=hidden, output=output, loss=loss,
                                          backend=backend, dtype=dtype, seed=seed))


# -- the tables themselves ------------------------------------------------------------------
def test_every_row_is_in_a_case():
    assert {a.name for a in HIDDEN} <= {h for h, _, _ in CASES}
    assert {a.name for a in OUTPUT} == {o for o, _ in PAIRS}, "an output without a loss"
    assert {l.name for l in LOSSES} == {l for _, l in PAIRS}, "a loss without an output"


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=ACTIVATION_IDS)
def test_activation_row_is_consistent(activation):
    assert activation.hidden or activation.output
    if activation.derivative == "cancels":  # an output that needs its canonical loss
        assert not activation.hidden
        assert losses.LOSSES[losses.DEFAULT_LOSS[activation.name]].canonical_output == \
            activation.name


@pytest.mark.parametrize("loss", LOSSES, ids=LOSS_IDS)
def test_loss_row_is_consistent(loss):
    if loss.canonical_output is not None:
        assert activations.ACTIVATIONS[loss.canonical_output].output
        assert losses.DEFAULT_LOSS[loss.canonical_output] == loss.name
    assert losses.is_classifier(loss.name) == loss.classifier


# -- the network ----------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=ACTIVATION_IDS)
def test_network_takes_each_activation_where_its_row_allows(activation):
    name = activation.name
    if activation.hidden:
        assert gpubp.Network([3, 4, 2], hidden=name, output="identity", seed=0).hidden == [name]
    else:
        with pytest.raises(ValueError, match=rf"hidden must be one of .*got '{name}'"):
            gpubp.Network([3, 4, 2], hidden=name)
    if activation.output:
        net = gpubp.Network([3, 2], output=name, seed=0)
        assert net.output == name and (name, net.loss_name) in PAIRS
    else:
        with pytest.raises(ValueError, match=rf"output must be one of .*got '{name}'"):
            gpubp.Network([3, 2], output=name)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_and_an_epoch_agree_on_the_reference_and_cpu_backends(case, dtype):
    X, Y = problem([4, 3], case[2], 19)
    X, Y = X.astype(dtype), Y.astype(dtype)
    ref, cpu = (_net(case, backend, dtype) for backend in ("reference", "cpu"))
    np.testing.assert_allclose(cpu.forward(X), ref.forward(X), **TOL[dtype])
    histories = [net.fit(X, Y, epochs=1, batch_size=8, lr=0.05, shuffle=False, verbose=0)
                 .history["loss"] for net in (ref, cpu)]
    np.testing.assert_allclose(histories[1], histories[0], **TOL[dtype])
    np.testing.assert_allclose(cpu.theta, ref.theta, **TOL[dtype])


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_compiled_epoch_equals_the_per_kernel_steps(case):
    X, Y = problem([4, 3], case[2], 19)
    fast, slow = _net(case, "cpu"), _net(case, "cpu")
    opt_fast, opt_slow = SGD(lr=0.05, momentum=0.5), SGD(lr=0.05, momentum=0.5)
    if not compiled.supported(fast, opt_fast):
        # the per-kernel step trains it: fit must not take the compiled epoch
        assert case[2] not in compiled.COMPILED_LOSSES
        return
    order = np.arange(19)
    got = compiled.train_epoch(fast, opt_fast, X, Y, order, 8)
    cost = 0.0
    for start in range(0, 19, 8):
        c, P = slow._train_step(opt_slow, X, Y, order[start:start + 8])
        cost += c * P
    np.testing.assert_allclose(got[0], cost, **TOL["float64"])
    np.testing.assert_allclose(fast.theta, slow.theta, **TOL["float64"])


def test_compiled_losses_are_rows_of_the_table():
    assert set(compiled.COMPILED_LOSSES) <= set(losses.NAMES)


# -- the CUDA kernels, in the simulator ---------------------------------------------------
def test_cuda_kernels_take_every_row_in_the_simulator():
    from tests.test_cuda_kernels import TESTS, run_simulated

    run_simulated(TESTS / "cudasim_tables.py", timeout=600)


# -- ONNX -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_onnx_export_equals_forward(tmp_path, case, dtype):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    net = _net(case, "cpu", dtype)
    path = net.to_onnx(tmp_path / "m.onnx")
    X = np.random.default_rng(5).normal(size=(9, 4)).astype(dtype)
    X[0] *= 300  # saturates every activation; exp hits its cap
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours, theirs = net.forward(X), session.run(["output"], {"X": X})[0]
    assert np.isfinite(ours).all()
    rtol = 1e-12 if dtype == "float64" else 1e-5
    if dtype == "float64" and "gelu" in case:
        rtol = 1e-6  # onnxruntime has no float64 Erf: the graph's is float32 (io/onnx_activations)
    np.testing.assert_allclose(theirs, ours, rtol=rtol, atol=rtol * np.abs(ours).max())


# -- scikit-learn -----------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=ACTIVATION_IDS)
def test_sklearn_names(activation):
    from gpubp.sklearn import estimators, solvers

    if activation.sklearn is None:
        assert activation.name not in solvers.OUT_ACTIVATION
        return
    if activation.hidden:
        assert estimators.ACTIVATIONS[activation.sklearn] == activation.name
        assert solvers.ACTIVATIONS[activation.sklearn] == activation.name
        rng = np.random.default_rng(0)
        X, y = rng.normal(size=(12, 3)), rng.normal(size=12)
        est = estimators.MLPRegressor(hidden_layer_sizes=(4,), activation=activation.sklearn, solver="lbfgs",
                                      max_iter=3).fit(X, y)
        assert est._net.hidden == [activation.name]
    if activation.output:
        assert solvers.OUT_ACTIVATION[activation.name] == activation.sklearn


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("loss", LOSSES, ids=LOSS_IDS)
def test_sklearn_estimators_train_and_export_every_loss(tmp_path, loss):
    """Each regression loss by its scikit-learn name; each classifier loss by the targets
    that select it (0/1 labels: binary cross-entropy, several classes: cross-entropy)."""
    from gpubp.sklearn.estimators import MLPClassifier, MLPRegressor

    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    if loss.classifier:
        y = rng.integers(0, 2 if loss.targets == "binary" else 3, 30)
        est = MLPClassifier((4,), max_iter=3, random_state=0)
    else:
        _, Y = problem([3, 1], loss.name, 30)
        if loss.sklearn is None:  # scikit-learn's MLPRegressor has no such loss: refused
            with pytest.raises(ValueError, match="loss"):
                MLPRegressor(hidden_layer_sizes=(4,), loss=loss.name, max_iter=3).fit(X, Y[:, 0])
            return
        y = Y[:, 0]
        est = MLPRegressor(hidden_layer_sizes=(4,), loss=loss.sklearn, max_iter=3, random_state=0)
    est.fit(X, y)
    assert est._net.loss_name == loss.name
    assert est.out_activation_ == activations.ACTIVATIONS[est._net.output].sklearn
    path = est.to_onnx(tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["output"], {"X": X})[0], est._forward(X),
                               rtol=1e-12, atol=1e-12)


# -- the command line -----------------------------------------------------------------------
def _help(command, option):
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    return next(a.help for a in sub._actions if option in a.option_strings)


def test_cli_help_lists_every_name():
    assert all(a.name in _help("train", "--hidden") for a in HIDDEN)
    assert all(a.name in _help("gradcheck", "--hidden") for a in HIDDEN)
    assert all(a.name in _help("gradcheck", "--output") for a in OUTPUT)
    assert all(l.name in _help("gradcheck", "--loss") for l in LOSSES)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_cli_gradcheck_passes(case, backend, capsys):
    hidden, output, loss = case
    assert main(["gradcheck", "--layers", "4", "--hidden", hidden, "--output", output,
                 "--loss", loss, "--backend", backend]) == 0, capsys.readouterr().err
    assert "ok:" in capsys.readouterr().out
