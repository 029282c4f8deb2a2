"""Labels and accuracy against hand-computed cases."""

import numpy as np
import pytest

import gpubp
from gpubp.core import metrics

# Four examples with three independent sigmoid outputs (multi-label). Thresholded at 0.5
# the predictions are
#   p0: (1, 0, 1)   targets (1, 0, 1)  -> every label right
#   p1: (1, 1, 0)   targets (1, 0, 0)  -> label 2 wrong
#   p2: (0, 0, 0)   targets (0, 1, 1)  -> labels 2 and 3 wrong
#   p3: (0, 1, 1)   targets (1, 0, 0)  -> every label wrong
# An example counts as correct only when all its labels are (subset accuracy): 1/4.
# (Counting an example as correct when any label is right would give 3/4.)
A_MULTI = np.array([[0.9, 0.2, 0.7],
                    [0.6, 0.8, 0.1],
                    [0.3, 0.4, 0.2],
                    [0.1, 0.9, 0.6]])
Y_MULTI = np.array([[1.0, 0.0, 1.0],
                    [1.0, 0.0, 0.0],
                    [0.0, 1.0, 1.0],
                    [1.0, 0.0, 0.0]])


def test_multilabel_accuracy_needs_every_label_right():
    assert metrics.accuracy(A_MULTI, Y_MULTI, "binary_cross_entropy") == 0.25
    np.testing.assert_array_equal(metrics.labels(A_MULTI, "binary_cross_entropy"),
                                  [[1, 0, 1], [1, 1, 0], [0, 0, 0], [0, 1, 1]])


def test_multilabel_accuracy_through_evaluate():
    """The same case through a network whose outputs are A_MULTI: one-hot inputs select a
    row of W = logit(A_MULTI), b = 0."""
    net = gpubp.Network([4, 3], output="sigmoid", loss="binary_cross_entropy",
                        dtype="float64", backend="reference")
    net.set_params([np.log(A_MULTI / (1 - A_MULTI))], [np.zeros(3)])
    np.testing.assert_allclose(net.forward(np.eye(4)), A_MULTI, rtol=1e-12)
    assert net.evaluate(np.eye(4), Y_MULTI)["accuracy"] == 0.25


@pytest.mark.parametrize("a,y,expected", [
    # one sigmoid output: thresholded at 0.5
    ([[0.7], [0.4], [0.5], [0.2]], [[1], [1], [0], [1]], 0.5),
    # softmax: argmax against the one-hot target's argmax
    ([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]], [[0, 1, 0], [0, 0, 1], [0, 0, 1]], 2 / 3),
])
def test_single_label_accuracy(a, y, expected):
    loss = "binary_cross_entropy" if len(a[0]) == 1 else "cross_entropy"
    assert metrics.accuracy(np.array(a), np.array(y, dtype=float), loss) == pytest.approx(expected)
