"""What a new user trips on (issue 18), through the public Python API.

Each test is one trap: an argument swallowed or mistyped, an error that names the wrong
thing, a file written where it must not be, a network that does not pickle. Every error
must be a TypeError/ValueError naming the argument, what was expected and what was given.
"""

import copy
import os
import pickle
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpubp

TESTS = Path(__file__).resolve().parent


def _data(P=40, n_in=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(P, n_in))
    return X, (X[:, 0] > 0).astype(int)


def _net(**options):
    options.setdefault("seed", 0)
    return gpubp.Network([3, 4, 2], **options)


# -- 1. unknown keyword arguments ---------------------------------------------------------


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("key, value", [("batch_norm", True), ("kernel_initializer", "he"),
                                        ("hiden", "relu"), ("sead", 0), ("xp", np)])
def test_unknown_network_keyword_is_a_type_error(backend, key, value):
    with pytest.raises(TypeError, match=rf"unexpected keyword argument '{key}'") as info:
        gpubp.Network([3, 4, 2], backend=backend, **{key: value})
    assert "weight_grad" in str(info.value)  # the backend options are listed


def test_misspelt_keyword_suggests_the_argument():
    with pytest.raises(TypeError, match=r"'hiden' \(did you mean 'hidden'\?\)"):
        gpubp.Network([3, 4, 2], hiden="relu")
    with pytest.raises(TypeError, match=r"'sead' \(did you mean 'seed'\?\)"):
        gpubp.Network([3, 4, 2], sead=0)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_invalid_backend_option_value_is_a_value_error(backend):
    with pytest.raises(ValueError, match=r"weight_grad must be one of \('auto', 'fused', "
                                         r"'cublas'\), got 'nonsense'"):
        gpubp.Network([3, 4, 2], backend=backend, weight_grad="nonsense")


def test_a_valid_cuda_option_is_accepted_on_the_cpu():
    # one set of options whatever backend device="cuda" resolves to (it may fall back)
    net = gpubp.Network([3, 4, 2], backend="cpu", weight_grad="fused")
    assert net.backend.name == "cpu"


def test_backend_classes_refuse_unknown_options():
    from gpubp.backends.cpu import CpuBackend

    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        CpuBackend(bogus=1)


def test_load_refuses_unknown_and_architecture_keywords(tmp_path):
    path = tmp_path / "m.npz"
    _net().save(path)
    with pytest.raises(TypeError, match=r"load\(\) got an unexpected keyword argument 'foo'"):
        gpubp.load(path, foo=1)
    with pytest.raises(TypeError, match=r"load\(\) got an unexpected keyword argument "
                                        r"'hidden'.*architecture.*file"):
        gpubp.load(path, hidden="relu")
    assert gpubp.load(path, seed=3, backend="reference").backend.name == "reference"


# -- 2. saving onto something that is not a regular file ------------------------------------


def test_save_refuses_a_device_node(tmp_path):
    # a private copy of /dev/null: the bug replaced the real one (as root) with a file
    node = tmp_path / "null.npz"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, AttributeError, OSError) as exc:
        pytest.skip(f"cannot make a device node here ({exc})")
    with pytest.raises(ValueError, match=r"path must be a regular file.*null\.npz.*"
                                         r"character device"):
        _net().save(node)
    assert node.is_char_device()


def test_save_refuses_a_fifo(tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"regular file.*FIFO"):
        _net().save(fifo)
    assert not fifo.is_file() and fifo.exists()


def test_checkpoint_and_onnx_refuse_a_fifo_too(tmp_path):
    X, y = _data()
    fifo = tmp_path / "pipe.ckpt"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"checkpoint must be a regular file.*FIFO"):
        _net().fit(X, y, epochs=1, verbose=0, checkpoint=fifo)
    from gpubp.io.atomic import atomic_write

    with pytest.raises(ValueError, match=r"regular file.*FIFO"):
        atomic_write(fifo, lambda f: f.write(b"x"))


def test_save_through_a_symlink_replaces_its_target(tmp_path):
    target = tmp_path / "real.npz"
    _net(seed=1).save(target)
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    net = _net(seed=2)
    net.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    np.testing.assert_array_equal(gpubp.load(target).get_params()[0][0], net.get_params()[0][0])


def test_save_failure_names_the_users_path(tmp_path, monkeypatch):
    import tempfile

    def fail(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory",
                                str(tmp_path / ".m.npz.gpubp-1-x.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", fail)
    path = tmp_path / "m.npz"
    with pytest.raises(FileNotFoundError) as info:
        _net().save(path)
    assert info.value.filename == str(path) and ".tmp" not in str(info.value)


# -- 3. booleans must be bools ---------------------------------------------------------------


@pytest.mark.parametrize("key, value", [("shuffle", "yes"), ("shuffle", 1), ("verbose", "1"),
                                        ("verbose", 1.0)])
def test_fit_flags_must_have_their_type(key, value):
    X, y = _data()
    with pytest.raises(TypeError, match=rf"{key} must be .*got {re.escape(repr(value))}"):
        _net().fit(X, y, epochs=1, **{"verbose": 0, key: value})


def test_fallback_must_be_a_bool():
    with pytest.raises(TypeError, match=r"fallback must be True or False, got 'no'"):
        gpubp.Network([3, 2], fallback="no")


def test_numpy_bools_are_bools():
    X, y = _data()
    _net().fit(X, y, epochs=1, verbose=0, shuffle=np.bool_(False))


# -- 4. divergence and non-finite losses -----------------------------------------------------


def _diverging():
    X, y = _data(200, 5)
    net = gpubp.Network([5, 16, 1], hidden="relu", output="sigmoid", seed=0)
    return net, X, y


def test_divergence_restores_parameters_with_a_finite_loss():
    net, X, y = _diverging()
    with pytest.raises(gpubp.TrainingDiverged) as info:
        net.fit(X, y, epochs=20, lr=1e6, verbose=0)
    loss = net.evaluate(X, y)["loss"]  # warnings are errors: no overflow on the way
    assert np.isfinite(loss)
    assert info.value.restored_loss == pytest.approx(loss)
    assert "restored" in str(info.value)


def test_non_finite_evaluate_warns_clearly():
    net, X, y = _diverging()
    W, b = net.get_params()
    net.set_params([w * 1e30 for w in W], b)
    with pytest.warns(RuntimeWarning, match=r"the loss is not finite") as record:
        result = net.evaluate(X, y)
    assert not np.isfinite(result["loss"])
    assert all("overflow encountered" not in str(w.message) for w in record)
    with pytest.warns(RuntimeWarning, match=r"the loss is not finite"):
        net.loss(X, y)


# -- 5. error messages -----------------------------------------------------------------------


def test_validation_data_errors_name_the_validation_data():
    X, y = _data()
    with pytest.raises(ValueError, match=r"validation_data\[0\] \(X_val\) must have 3 columns"):
        _net().fit(X, y, epochs=1, verbose=0, validation_data=(X[:, :2], y))
    with pytest.raises(ValueError, match=r"validation_data\[1\] \(Y_val\) must have 40 rows"):
        _net().fit(X, y, epochs=1, verbose=0, validation_data=(X, y[:3]))


def test_validation_data_of_four_says_so():
    X, y = _data()
    with pytest.raises(ValueError, match=r"validation_data must be a tuple \(X_val, Y_val\) "
                                         r"or \(X_val, Y_val, sample_weight_val\), got a "
                                         r"tuple of 4"):
        _net().fit(X, y, epochs=1, verbose=0, validation_data=(X, y, None, None))
    with pytest.raises(ValueError, match=r"validation_data\[2\] \(sample_weight_val\) must "
                                         r"have shape \(40,\)"):
        _net().fit(X, y, epochs=1, verbose=0, validation_data=(X, y, np.ones(3)))


@pytest.mark.parametrize("lr", [float("inf"), float("nan")])
def test_infinite_lr_says_finite(lr):
    X, y = _data()
    with pytest.raises(ValueError, match=r"lr must be > 0, got .*not a finite number"):
        _net().fit(X, y, epochs=1, verbose=0, lr=lr)


def test_negative_seed():
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer or None, got -1"):
        gpubp.Network([3, 2], seed=-1)


def test_load_blames_the_device_not_the_file(tmp_path):
    path = tmp_path / "m.npz"
    _net().save(path)
    with pytest.raises(ValueError) as info:
        gpubp.load(path, device="tpu")
    assert "device must be one of" in str(info.value) and "header" not in str(info.value)


def test_float32_overflow_is_reported_as_overflow():
    net = _net()
    with pytest.raises(ValueError, match=r"X .*overflow.*float32.*dtype='float64'"):
        net.predict(np.full((2, 3), 1e300))
    X, _ = _data()
    with pytest.raises(ValueError, match=r"overflow"):
        gpubp.Network([3, 1], output="identity").fit(X, np.full(40, 1e300), verbose=0)
    W, b = net.get_params()
    with pytest.raises(ValueError, match=r"W\[0\] .*overflow.*float32"):
        net.set_params([np.full_like(W[0], 1e300, dtype=np.float64), W[1]], b)


def test_bogus_environment_device_names_the_variable(monkeypatch):
    monkeypatch.setenv("GPUBP_DEVICE", "bogus")
    with pytest.raises(ValueError, match=r"got 'bogus' from \$GPUBP_DEVICE"):
        gpubp.Network([3, 2])


# -- 6. dtype spellings ------------------------------------------------------------------------


@pytest.mark.parametrize("spelling, name", [
    (np.float32, "float32"), (np.dtype("float32"), "float32"), ("f4", "float32"),
    ("<f4", "float32"), ("single", "float32"), ("float32", "float32"), (">f4", "float32"),
    (np.float64, "float64"), ("float64", "float64"), ("f8", "float64"), ("double", "float64"),
    (float, "float64"), ("float", "float64"), (np.double, "float64")])
def test_every_numpy_spelling_of_the_dtypes(spelling, name, tmp_path):
    net = gpubp.Network([3, 2], dtype=spelling)
    assert net.dtype == np.dtype(name) and net.dtype.isnative
    path = tmp_path / "m.npz"
    net.save(path)
    assert gpubp.load(path, dtype=spelling).dtype == np.dtype(name)


@pytest.mark.parametrize("spelling", ["float16", np.int32, "int", None, "complex", "f2", "bogus"])
def test_other_dtypes_are_refused_with_the_list(spelling):
    with pytest.raises((TypeError, ValueError), match=r"dtype must be one of \('float32', 'float64'\)"):
        gpubp.Network([3, 2], dtype=spelling)


def test_load_converts_to_the_asked_dtype(tmp_path):
    net = _net(dtype="float32")
    path = tmp_path / "m.npz"
    net.save(path)
    wide = gpubp.load(path, dtype=np.float64)
    np.testing.assert_array_equal(wide.get_params()[0][0], net.get_params()[0][0])


def test_sklearn_estimators_take_dtype_spellings():
    from gpubp.sklearn.estimators import MLPClassifier

    X, y = _data()
    for spelling in (np.float32, "f4", np.dtype("float32")):
        est = MLPClassifier(hidden_layer_sizes=(4,), solver="lbfgs", max_iter=200,
                            dtype=spelling).fit(X, y)
        assert est.coefs_[0].dtype == np.float32
    with pytest.raises(ValueError, match="dtype"):
        MLPClassifier(dtype="float16").fit(X, y)


# -- 7. pickling and copying -------------------------------------------------------------------


def _assert_same(a, b):
    assert a.sizes == b.sizes and a.hidden == b.hidden and a.output == b.output
    assert a.loss_name == b.loss_name and a.dtype == b.dtype and a.seed == b.seed
    assert a.device == b.device and a.backend.name == b.backend.name
    for x, y in zip(a.get_params()[0] + a.get_params()[1], b.get_params()[0] + b.get_params()[1]):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    assert a.rng.bit_generator.state == b.rng.bit_generator.state


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_network_pickles_and_deep_copies(backend, dtype):
    X, y = _data()
    net = gpubp.Network([3, 5, 2], hidden="tanh", seed=7, backend=backend, dtype=dtype)
    net.fit(X, y, epochs=2, verbose=0)
    for clone in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net), copy.copy(net)):
        _assert_same(net, clone)
        assert clone.theta is not net.theta
        # the clone trains on exactly like the original (same shuffles, same steps)
        twin = copy.deepcopy(net)
        twin.fit(X, y, epochs=2, verbose=0)
        clone.fit(X, y, epochs=2, verbose=0)
        _assert_same(twin, clone)
    # views into theta still are views after the round trip
    clone = pickle.loads(pickle.dumps(net))
    clone.W[0][0, 0] = 42
    assert clone.theta[0] == 42 and net.theta[0] != 42


def test_network_pickles_before_and_after_use():
    net = gpubp.Network([3, 2], seed=None)
    clone = pickle.loads(pickle.dumps(net))
    _assert_same(net, clone)
    X, y = _data()
    clone.predict(X)
    assert clone.predict(X).shape == (40,)


def test_network_on_the_simulated_cuda_backend_pickles():
    code = (
        "import pickle, numpy as np, gpubp\n"
        "from tests.cudasim_support import prepare; prepare()\n"
        "net = gpubp.Network([3, 4, 2], device='cuda', backend='cuda', fallback=False, "
        "seed=0, weight_grad='fused')\n"
        "X = np.random.default_rng(0).normal(size=(20, 3)); y = np.arange(20) % 2\n"
        "net.fit(X, y, epochs=1, verbose=0)\n"
        "clone = pickle.loads(pickle.dumps(net))\n"
        "assert clone.backend.name == 'cuda' and clone.backend.weight_grad == 'fused'\n"
        "for a, b in zip(net.get_params()[0], clone.get_params()[0]):\n"
        "    assert (a == b).all()\n"
        "assert (clone.predict(X) == net.predict(X)).all()\n"
        "print('ok')\n")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-c", code], cwd=TESTS.parent, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0 and "ok" in proc.stdout, (proc.stdout + proc.stderr)[-4000:]


# -- 8. predict_proba and History as a mapping -------------------------------------------------


def test_predict_proba_softmax():
    X, y = _data()
    net = _net()
    proba = net.predict_proba(X)
    assert proba.shape == (40, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(proba.argmax(axis=1), net.predict(X))


def test_predict_proba_single_sigmoid_is_two_columns():
    X, y = _data()
    net = gpubp.Network([3, 4, 1], output="sigmoid", seed=0)
    proba = net.predict_proba(X)
    assert proba.shape == (40, 2)
    np.testing.assert_allclose(proba[:, 1], net.forward(X)[:, 0])
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(proba.argmax(axis=1), net.predict(X))


def test_predict_proba_multilabel_sigmoid():
    X, _ = _data()
    net = gpubp.Network([3, 4, 3], output="sigmoid", seed=0)
    assert net.predict_proba(X).shape == (40, 3)


def test_predict_proba_of_a_regressor_is_an_attribute_error():
    net = gpubp.Network([3, 4, 1], output="identity")
    assert not hasattr(net, "predict_proba")
    with pytest.raises(AttributeError, match=r"predict_proba.*classifier.*'mse'.*predict"):
        net.predict_proba(np.zeros((2, 3)))


def test_history_is_a_mapping():
    X, y = _data()
    hist = _net().fit(X, y, epochs=3, verbose=0, validation_data=(X, y))
    assert list(hist) == list(hist.keys()) == ["loss", "accuracy", "val_loss",
                                                 "val_accuracy", "lr"]
    assert dict(hist) == hist.history
    assert list(hist.values()) == [hist[k] for k in hist.keys()]
    assert dict(hist.items()) == hist.history
    assert hist.get("nope") is None and hist.get("loss") == hist["loss"]
    assert len(hist) == 3  # epochs, as before


def test_history_key_error_lists_the_figures():
    hist = gpubp.History()
    hist.record(0, loss=1.0)
    with pytest.raises(KeyError, match=r"val_loss.*recorded: \['loss'\]"):
        hist["val_loss"]


# -- 9. more bad inputs a new user tries ---------------------------------------------------------


def test_none_where_data_belongs_says_none():
    X, y = _data()
    with pytest.raises(TypeError, match=r"^Y must be array-like of numbers, got None$"):
        _net().fit(X, None, verbose=0)
    with pytest.raises(TypeError, match=r"^X must be array-like of numbers, got None$"):
        _net().predict(None)
    with pytest.raises(TypeError, match=r"validation_data\[1\] \(Y_val\) must be array-like"):
        _net().fit(X, y, verbose=0, validation_data=(X, None))


def test_paths_that_are_not_paths_name_the_argument():
    X, y = _data()
    with pytest.raises(TypeError, match=r"path must be a file path \(str or os.PathLike\), "
                                        r"got None"):
        _net().save(None)
    with pytest.raises(TypeError, match=r"path must be a file path .*got None"):
        gpubp.load(None)
    with pytest.raises(TypeError, match=r"checkpoint must be a file path .*got 123"):
        _net().fit(X, y, verbose=0, checkpoint=123)
    with pytest.raises(TypeError, match=r"resume must be a file path .*got 123"):
        _net().fit(X, y, verbose=0, resume=123)


def test_hidden_none_and_wrong_count():
    with pytest.raises(TypeError, match=r"hidden must be an activation name.*got None"):
        gpubp.Network([3, 4, 2], hidden=None)
    with pytest.raises(ValueError, match=r"one name or 1 name \(a list, one per hidden "
                                         r"layer of sizes\), got 2: \[.relu., .relu.\]"):
        gpubp.Network([3, 4, 2], hidden=["relu", "relu"])
    assert gpubp.Network([3, 4, 2], hidden=np.array(["relu"])).hidden == ["relu"]


@pytest.mark.parametrize("argument, value, meant", [
    ("output", "linear", "identity"), ("hidden", "logistic", "sigmoid"),
    ("loss", "crossentropy", "cross_entropy"), ("loss", "squared_error", "mse"),
    ("loss", "log_loss", "cross_entropy")])
def test_names_from_other_libraries_get_a_hint(argument, value, meant):
    with pytest.raises(ValueError, match=rf"got '{value}' \(did you mean '{meant}'\?\)"):
        gpubp.Network([3, 4, 2], **{argument: value})


def test_one_label_per_row_for_several_sigmoid_outputs_explains():
    X, y = _data()
    with pytest.raises(ValueError, match=r"shape \(40, 2\), got shape \(40,\): 2 sigmoid "
                                         r"outputs are multi-label.*output='softmax'"):
        gpubp.Network([3, 4, 2], output="sigmoid").fit(X, y, verbose=0)


def test_a_used_optimizer_pickles_with_its_views():
    X, y = _data()
    opt = gpubp.Adam(lr=0.01)
    _net().fit(X, y, epochs=1, verbose=0, optimizer=opt)
    for clone in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        assert clone.iterations == opt.iterations and clone.get_config() == opt.get_config()
        for key, bufs in clone.state.items():
            flat = clone.flat_state[key]
            np.testing.assert_array_equal(flat, opt.flat_state[key])
            bufs[0].flat[0] = 123.0  # a view into the flat buffer, as in the original
            assert flat[0] == 123.0


@pytest.mark.parametrize("key, value", [("shuffle", "yes"), ("early_stopping", "no"),
                                        ("warm_start", 1), ("nesterovs_momentum", None),
                                        ("verbose", "x")])
def test_sklearn_flags_must_be_bools(key, value):
    from gpubp.sklearn.estimators import MLPClassifier

    X, y = _data()
    with pytest.raises(TypeError, match=rf"{key} must be .*got {re.escape(repr(value))}"):
        MLPClassifier(hidden_layer_sizes=(3,), max_iter=1, **{key: value}).fit(X, y)
