"""Cases drawn from the activation and loss tables, for ``tests/test_tables.py`` and
``tests/cudasim_tables.py`` (not a test module).

Every row of :data:`gpubp.activations.ACTIVATIONS` and :data:`gpubp.losses.LOSSES` appears
in at least one case, so a row added to a table is run through every consumer without
editing a test.
"""

import numpy as np

from gpubp import activations, losses

ACTIVATIONS = list(activations.ACTIVATIONS.values())
LOSSES = list(losses.LOSSES.values())
HIDDEN = [a for a in ACTIVATIONS if a.hidden]
OUTPUT = [a for a in ACTIVATIONS if a.output]


def accepted(output, loss):
    """Whether the network accepts ``output`` with ``loss`` (the pairing rules)."""
    try:
        losses.check_pairing(output, loss, activations.ACTIVATIONS)
    except ValueError:
        return False
    return True


# (output, loss): every pairing the rules accept
PAIRS = [(a.name, l.name) for a in OUTPUT for l in LOSSES if accepted(a.name, l.name)]


def _cases():
    """``(hidden, output, loss)`` triples: each hidden activation under an mse identity
    output, each accepted output/loss pair under tanh hidden layers."""
    cases = [(a.name, "identity", "mse") for a in HIDDEN]
    cases += [("tanh", output, loss) for output, loss in PAIRS]
    return list(dict.fromkeys(cases))


CASES = _cases()


def case_id(case):
    return "-".join(case)


def targets(rng, P, n_out, loss):
    """Random valid targets for ``loss``, by the kind its row names."""
    kind = losses.LOSSES[loss].targets
    if kind == "labels":
        return np.eye(n_out)[rng.integers(0, n_out, P)]
    if kind == "binary":
        return rng.integers(0, 2, (P, n_out)).astype(float)
    if kind == "counts":
        return rng.poisson(1.5, (P, n_out)).astype(float)
    return rng.normal(size=(P, n_out))


def problem(sizes, loss, P, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(P, sizes[0])), targets(rng, P, sizes[-1], loss)
