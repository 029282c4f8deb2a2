"""Initial weights: ``Network(init=...)``'s five rules, a callable, the defaults each
activation picks, and the errors for bad values.

The statistical checks draw 400 x 600 = 240 000 weights with a fixed seed: their standard
deviation lands within 1% of the formula (its sampling error is 0.15% for a normal draw,
0.1% for a uniform one), so a rule with the wrong fan or gain (a factor of 2 in the
variance, 41% in the deviation) fails by far.
"""

import numpy as np
import pytest

import gpubp
from gpubp import activations

FAN_IN, FAN_OUT = 400, 600

# rule -> (distribution, variance)
RULES = {
    "glorot_uniform": ("uniform", 2 / (FAN_IN + FAN_OUT)),
    "glorot_normal": ("normal", 2 / (FAN_IN + FAN_OUT)),
    "he_uniform": ("uniform", 2 / FAN_IN),
    "he_normal": ("normal", 2 / FAN_IN),
    "lecun_normal": ("normal", 1 / FAN_IN),
}


def _first_layer(**options):
    return gpubp.Network([FAN_IN, FAN_OUT, 2], seed=0, dtype="float64", **options).get_params()[0][0]


def test_the_rules_are_the_table_of_the_issue():
    assert tuple(activations.INITS) == tuple(RULES)


@pytest.mark.parametrize("rule", RULES)
def test_each_rule_draws_its_distribution(rule):
    kind, variance = RULES[rule]
    W = _first_layer(init=rule, hidden="tanh")
    std = np.sqrt(variance)
    assert W.std() == pytest.approx(std, rel=0.01)
    assert abs(W.mean()) < 0.01 * std
    if kind == "uniform":  # bounded by sqrt(3) std, and reaching close to it
        limit = np.sqrt(3 * variance)
        assert np.abs(W).max() <= limit and np.abs(W).max() > 0.999 * limit
    else:  # a normal's tails: |W| > 4 std happens (about 15 of 240 000), > 6 std never
        assert 4 * std < np.abs(W).max() < 6 * std
        assert np.mean(np.abs(W) < std) == pytest.approx(0.6827, abs=0.005)


@pytest.mark.parametrize("hidden, rule", [
    ("sigmoid", "glorot_uniform"), ("tanh", "glorot_uniform"), ("identity", "glorot_uniform"),
    ("relu", "he_normal"), ("leaky_relu", "he_normal"), ("elu", "he_normal"),
    ("gelu", "he_normal"), ("gelu_tanh", "he_normal"), ("silu", "he_normal"),
    ("softplus", "he_normal"), ("selu", "lecun_normal"),
])
def test_the_default_follows_the_activation(hidden, rule):
    assert activations.INIT[hidden] == rule
    np.testing.assert_array_equal(_first_layer(hidden=hidden), _first_layer(hidden=hidden,
                                                                             init=rule))


def test_the_default_of_the_first_four_is_what_it_was():
    """Glorot uniform U(±sqrt(6 / (n_in + n_out))) and He normal N(0, 2 / n_in), drawn in
    this order from the seeded generator, bit for bit."""
    rng = np.random.default_rng(0)
    limit = (6.0 / (FAN_IN + FAN_OUT)) ** 0.5
    np.testing.assert_array_equal(_first_layer(hidden="tanh"),
                                  rng.uniform(-limit, limit, size=(FAN_IN, FAN_OUT)))
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(_first_layer(hidden="relu"),
                                  rng.normal(0.0, (2.0 / FAN_IN) ** 0.5, size=(FAN_IN, FAN_OUT)))


def test_one_rule_for_every_layer_the_output_too():
    W, b = gpubp.Network([300, 200, 100], hidden="relu", init="lecun_normal", seed=1,
                         dtype="float64").get_params()
    assert W[1].std() == pytest.approx(np.sqrt(1 / 200), rel=0.02)
    assert all((v == 0).all() for v in b)


def test_a_callable_gets_the_shape_and_the_seeded_generator():
    calls = []

    def init(shape, rng):
        calls.append(shape)
        return rng.uniform(-0.1, 0.1, size=shape)

    W = gpubp.Network([3, 4, 2], init=init, seed=5).get_params()[0]
    assert calls == [(3, 4), (4, 2)]
    rng = np.random.default_rng(5)
    np.testing.assert_array_equal(W[0], rng.uniform(-0.1, 0.1, (3, 4)).astype(np.float32))
    again = gpubp.Network([3, 4, 2], init=init, seed=5).get_params()[0]
    np.testing.assert_array_equal(again[1], W[1])


@pytest.mark.parametrize("init, error, match", [
    ("xavier", ValueError, r"init must be one of \('glorot_uniform', .*got 'xavier'"),
    ("he_normall", ValueError, r"did you mean 'he_normal'"),
    ("kaiming_uniform", ValueError, r"did you mean 'he_uniform'"),
    ("xavier_normal", ValueError, r"did you mean 'glorot_normal'"),
    (0.1, TypeError, r"init must be one of .*got float"),
    (lambda shape, rng: np.zeros((2, 2)), ValueError,
     r"init must return a real array of the shape it is given, \(3, 4\) for W\[0\]; got "
     r"float64 of shape \(2, 2\)"),
    (lambda shape, rng: np.full(shape, "x"), ValueError, r"init must return a real array"),
    (lambda shape, rng: np.full(shape, np.nan), ValueError, r"W\[0\] must be finite"),
])
def test_bad_init_is_refused(init, error, match):
    with pytest.raises(error, match=match):
        gpubp.Network([3, 4, 2], init=init)
