"""Bad input gets a clear ValueError/TypeError naming the argument, expected and received."""

import numpy as np
import pytest

import gpubp


@pytest.fixture
def net():
    return gpubp.Network([4, 3, 3], seed=0, backend="reference")


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(6, 4)), rng.integers(0, 3, 6)


# -- construction ------------------------------------------------------------------------
def test_sizes_too_short():
    with pytest.raises(ValueError, match=r"sizes must list at least.*got \[4\]"):
        gpubp.Network([4])


def test_sizes_not_integers():
    with pytest.raises(TypeError, match=r"sizes must hold integers, got 2.5"):
        gpubp.Network([4, 2.5, 3])


def test_sizes_not_positive():
    with pytest.raises(ValueError, match=r"sizes must hold positive widths, got 0"):
        gpubp.Network([4, 0, 3])


def test_sizes_not_a_list():
    with pytest.raises(TypeError, match="sizes must be a list"):
        gpubp.Network("4,3")


def test_unknown_hidden_activation():
    with pytest.raises(ValueError, match=r"hidden must be one of .*got 'swish'"):
        gpubp.Network([4, 3, 2], hidden="swish")


def test_softmax_is_output_only():
    with pytest.raises(ValueError, match=r"hidden must be one of .*got 'softmax'"):
        gpubp.Network([4, 3, 2], hidden="softmax")


def test_hidden_list_of_wrong_length():
    with pytest.raises(ValueError, match=r"hidden must be one name or 2 names.*got 1"):
        gpubp.Network([4, 3, 3, 2], hidden=["relu"])


def test_unknown_output_activation():
    with pytest.raises(ValueError, match=r"output must be one of .*got 'gelu'"):
        gpubp.Network([4, 2], output="gelu")


def test_unknown_loss():
    with pytest.raises(ValueError, match=r"loss must be one of .*got 'hinge'"):
        gpubp.Network([4, 2], loss="hinge")


@pytest.mark.parametrize("output,loss", [("sigmoid", "cross_entropy"), ("softmax", "binary_cross_entropy"),
                                         ("tanh", "binary_cross_entropy"), ("softmax", "mse")])
def test_invalid_pairings(output, loss):
    with pytest.raises(ValueError, match=f"loss='{loss}' needs"):
        gpubp.Network([4, 2], output=output, loss=loss)


def test_unknown_dtype():
    with pytest.raises(ValueError, match=r"dtype must be one of .*got 'float16'"):
        gpubp.Network([4, 2], dtype="float16")


def test_unknown_device():
    with pytest.raises(ValueError, match=r"device must be one of .*got 'tpu'"):
        gpubp.Network([4, 2], device="tpu")


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"backend must be one of .*got 'opencl'"):
        gpubp.Network([4, 2], backend="opencl")


def test_seed_not_integer():
    with pytest.raises(TypeError, match=r"seed must be an integer or None, got 1.5"):
        gpubp.Network([4, 2], seed=1.5)


# -- data ----------------------------------------------------------------------------------
def test_X_wrong_width(net):
    with pytest.raises(ValueError, match=r"X must have 4 columns .*got shape \(6, 5\)"):
        net.forward(np.zeros((6, 5)))


def test_X_wrong_rank(net):
    with pytest.raises(ValueError, match=r"X must be 2-D with shape \(P, 4\), got shape \(4,\)"):
        net.forward(np.zeros(4))


def test_X_empty_batch(net):
    with pytest.raises(ValueError, match=r"X must hold at least one example, got shape \(0, 4\)"):
        net.forward(np.zeros((0, 4)))


def test_X_with_nan(net):
    X = np.zeros((3, 4))
    X[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"X must be finite, got 1 NaN"):
        net.forward(X)


def test_X_with_inf(net, data):
    X, y = data
    X = X.copy()
    X[0, 0] = np.inf
    with pytest.raises(ValueError, match="X must be finite"):
        net.fit(X, y, epochs=1, verbose=0)


def test_X_non_numeric(net):
    with pytest.raises(TypeError, match=r"X must hold real numbers, got an array of dtype <U"):
        net.forward([["a", "b", "c", "d"]])


def test_X_ragged(net):
    with pytest.raises(TypeError, match="X must be array-like of numbers"):
        net.forward([[1, 2, 3, 4], [1, 2]])


def test_Y_wrong_rows(net, data):
    X, _ = data
    with pytest.raises(ValueError, match=r"Y must have 6 rows .*got shape \(5,\)"):
        net.loss(X, np.zeros(5, dtype=int))


def test_Y_wrong_width(net, data):
    X, _ = data
    with pytest.raises(ValueError, match=r"Y must have shape \(6, 3\) or integer labels \(6,\), got shape \(6, 2\)"):
        net.loss(X, np.zeros((6, 2)))


def test_labels_out_of_range(net, data):
    X, _ = data
    with pytest.raises(ValueError, match=r"Y labels must lie in \[0, 2\] for 3 classes, got values in \[0, 3\]"):
        net.fit(X, np.array([0, 1, 2, 3, 0, 1]), epochs=1, verbose=0)


def test_negative_labels(net, data):
    X, _ = data
    with pytest.raises(ValueError, match=r"got values in \[-1, 2\]"):
        net.loss(X, np.array([0, 1, 2, -1, 0, 1]))


def test_fractional_labels(net, data):
    X, _ = data
    with pytest.raises(ValueError, match="integer class labels"):
        net.loss(X, np.array([0, 1.5, 2, 1, 0, 1]))


def test_binary_labels_must_be_0_or_1(data):
    X, _ = data
    net = gpubp.Network([4, 1], output="sigmoid", backend="reference")
    with pytest.raises(ValueError, match=r"Y labels must lie in \[0, 1\]"):
        net.loss(X, np.array([0, 1, 2, 1, 0, 1]))


def test_cross_entropy_rows_must_sum_to_one(net, data):
    X, _ = data
    with pytest.raises(ValueError, match="Y rows must sum to 1 for loss='cross_entropy'"):
        net.loss(X, np.full((6, 3), 0.5))


def test_probability_targets_in_unit_interval(data):
    X, _ = data
    net = gpubp.Network([4, 2], output="sigmoid", backend="reference")
    with pytest.raises(ValueError, match=r"Y must hold probabilities in \[0, 1\]"):
        net.loss(X, np.full((6, 2), 2.0))


def test_Y_with_nan(data):
    X, _ = data
    net = gpubp.Network([4, 2], output="identity", backend="reference")
    Y = np.zeros((6, 2))
    Y[3, 1] = np.nan
    with pytest.raises(ValueError, match="Y must be finite"):
        net.loss(X, Y)


# -- fit arguments ------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,exc,pattern", [
    ({"epochs": 0}, ValueError, r"epochs must be > 0, got 0"),
    ({"epochs": 2.5}, TypeError, r"epochs must be an integer, got 2.5"),
    ({"batch_size": -1}, ValueError, r"batch_size must be > 0, got -1"),
    ({"lr": -0.1}, ValueError, r"lr must be > 0, got -0.1"),
    ({"lr": float("nan")}, ValueError, r"lr must be > 0, got nan"),
    ({"verbose": 3}, ValueError, r"verbose must be 0, 1 or 2, got 3"),
    ({"optimizer": "adagrad"}, ValueError, r"optimizer must be one of .*got 'adagrad'"),
    ({"validation_data": np.zeros(3)}, ValueError, r"validation_data must be a tuple"),
])
def test_bad_fit_arguments(net, data, kwargs, exc, pattern):
    X, y = data
    with pytest.raises(exc, match=pattern):
        net.fit(X, y, **{"verbose": 0, **kwargs})


# -- parameters ----------------------------------------------------------------------------
def test_set_params_wrong_shape(net):
    W, b = net.get_params()
    W[1] = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"W\[1\] must have shape \(3, 3\), got \(3, 4\)"):
        net.set_params(W, b)


def test_set_params_wrong_count(net):
    W, b = net.get_params()
    with pytest.raises(ValueError, match=r"b must be a list of 2 arrays, got 1"):
        net.set_params(W, b[:1])


def test_set_params_non_finite(net):
    W, b = net.get_params()
    b[0][0] = np.inf
    with pytest.raises(ValueError, match=r"b\[0\] must be finite"):
        net.set_params(W, b)


def test_failed_set_params_changes_nothing(net):
    W, b = net.get_params()
    bad = [w.copy() for w in W]
    bad[0][:] = 7
    bad[1] = np.zeros((1, 1))
    with pytest.raises(ValueError):
        net.set_params(bad, b)
    np.testing.assert_array_equal(net.get_params()[0][0], W[0])
