"""The split step: the ranks of one machine training one batch together, no gradient summed.

This is the ``"shared"`` reduction of :mod:`gpubp.distributed.reductions` (the default
for host arrays), where it applies.

Data parallelism gives every rank a full gradient of ``N`` elements to write, sum and
read back, although the ranks of a machine share its memory. When every rank of the run
is on one machine (:class:`~gpubp.distributed.shared_memory.SharedMemoryGradientSum`, no cross-node
link) and the parameters are shared, a step can split the work so that nothing but the
batch's activations is shared. Rank ``k`` of ``R``:

- gathers, feeds forward and backpropagates ``δ`` over **its rows** of the global batch,
  writing ``a^l`` and ``δ^l`` into windows shared by the node, laid out as one batch;
- computes and applies the gradient of **its rows of each** ``W^l``, over **every row of
  the batch**: ``∂W^l[r] = a^{l-1}[:, r]ᵀ δ^l``, one GEMM with ``K = P_global`` — the
  single-process product, split by output rows rather than summed over ranks; likewise
  its columns of ``b^l``.

From the output layer down, layer ``l``'s update waits at a barrier until every rank has
written ``δ^l`` and finished reading ``W^l`` (for ``δ^{l-1} = δ^l W^{l T}``); a last
barrier ends the step. With plain SGD the step lands in ``W^l`` from the GEMM itself (BLAS
``beta = 1 − lr λ``, as in the compiled epoch): no gradient is stored at all. Other
elementwise optimizers get the rank's gradient blocks in a shared buffer and update the
same spans of the shared parameters and state.

The arithmetic is the single-process step's, up to the rounding of ``δ^L``'s ``1/P``; each
rank reads a fraction ``(R−1)/R`` of the activations and errors the others wrote, where
summing gradients would read ``(R−1)/R`` of ``N`` and then update ``N/R`` from it.
"""

import numpy as np

from gpubp.kernels.cpu_epoch import descend, gather_rows
from gpubp.core.layout import row_blocks
from gpubp.optim.optimizers import SGD
from gpubp.core import compiled


def _share(n, k, R):
    """Part ``k`` of ``R`` of ``range(n)``."""
    return slice(k * n // R, (k + 1) * n // R)


class SplitStep:
    """Train batches split over the ranks of one machine (see the module docstring).

    Parameters
    ----------
    shared : SharedMemoryGradientSum
        The run's sum: its node communicator, barrier, windows (freed with it) and
        shared parameters; ``shared.slots[0]`` is the node's gradient buffer (none with
        plain SGD).
    """

    def __init__(self, shared):
        self.shared = shared
        self.net = net = shared.net
        self.R, self.k = shared.node.Get_size(), shared.node.Get_rank()
        self.capacity = 0
        self.coefficients = np.empty(2, net.dtype)
        self.bias_sums = np.empty(max(net.sizes[1:]), net.dtype)

    @staticmethod
    def fuses(optimizer):
        """Whether the step lands in W from the gradient's GEMM (plain SGD)."""
        return type(optimizer) is SGD and optimizer.momentum == 0

    @staticmethod
    def applies(shared, net, optimizer):
        """Whether the run of ``shared`` (a SharedMemoryGradientSum) can split its batches:
        one machine, shared parameters, and what the compiled CPU step supports (the
        ``cpu`` backend, SGD or Adam, a loss of the compiled kernels, SciPy's BLAS)."""

        return (shared.shares_parameters and shared.cross is None
                and compiled.supported(net, optimizer))

    def _workspace(self, P):
        """Shared ``a^0..a^L`` and ``δ^1..δ^L`` for ``P`` rows (grown, collectively, when a
        larger batch comes: every rank sees the same batch sizes)."""
        if P <= self.capacity:
            return
        sizes = self.net.sizes
        (acts,) = self.shared.allocate(P * sum(sizes), 1)
        (deltas,) = self.shared.allocate(P * sum(sizes[1:]), 1)
        self.activations = row_blocks(acts, P, sizes)
        self.deltas = [None] + row_blocks(deltas, P, sizes[1:])
        self.targets = np.empty((-(-P // self.R), sizes[-1]), self.net.dtype)
        self.capacity = P

    def step(self, optimizer, X, Y, batch):
        """One step on the global batch ``batch`` (row indices of X and Y).

        Returns
        -------
        cost_sum : float
            Sum of the costs of this rank's rows.
        correct : int
            Correct predictions among them (0 for regressors).
        """
        net, be, L = self.net, self.net.backend, self.net.L
        P = len(batch)
        self._workspace(P)
        rows = _share(P, self.k, self.R)
        P_k = rows.stop - rows.start
        a = [block[:P] for block in self.activations]
        d = [None] + [block[:P] for block in self.deltas[1:]]
        acts = net.activation_names
        cost_sum, correct = 0.0, 0
        if P_k:
            order = np.ascontiguousarray(batch, dtype=np.int64)
            gather_rows(X, order, rows.start, a[0][rows])
            y = self.targets[:P_k]
            gather_rows(Y, order, rows.start, y)
            for l in range(1, L + 1):  # z^l = a^{l-1} W^l, a^l = g(z^l + b^l): own rows
                np.matmul(a[l - 1][rows], net.W[l - 1], out=a[l][rows])
                be.bias_activation(a[l][rows], net.b[l - 1], acts[l - 1])
            cost_sum = be.output_delta(a[L][rows], y, net.output, net.loss_name,
                                       d[L][rows], net.loss_param) * P_k
            d[L][rows] *= P_k / P  # the global 1/P, as the single-process δ^L carries
            if net.is_classifier:
                correct = int(be.count_correct(a[L][rows], y, net.loss_name))
        fused = self.fuses(optimizer)  # (the state exists: the shared sum moved it)
        lr = optimizer.current_lr()
        if fused:
            self.coefficients[:] = (-lr, 1 - lr * optimizer.weight_decay)
        else:
            self.coefficients[:] = (1, 0)
        gradient = None if fused else self.shared.slots[0]
        spans = []
        for l in range(L, 0, -1):
            if l > 1 and P_k:  # δ^{l-1} = (δ^l W^{l T}) ⊙ g': own rows, the old W^l
                np.matmul(d[l][rows], net.W[l - 1].T, out=d[l - 1][rows])
                be.hidden_delta(d[l - 1][rows], a[l - 1][rows], acts[l - 2])
            self.shared.barrier()  # every δ^l written, W^l read by every rank
            n_in, n_out = net.sizes[l - 1], net.sizes[l]
            w = net.layer_slices[l - 1].start
            r, c = _share(n_in, self.k, self.R), _share(n_out, self.k, self.R)
            weights = slice(w + r.start * n_out, w + r.stop * n_out)
            bias = slice(w + n_in * n_out + c.start, w + n_in * n_out + c.stop)
            target = net.theta if fused else gradient
            descend(target[weights].reshape(-1, n_out), a[l - 1], d[l], self.coefficients,
                    r.start)
            sums = self.bias_sums[:c.stop - c.start]
            np.sum(d[l][:, c], axis=0, out=sums)
            if fused:
                be.sgd_update(net.theta[bias], sums, None, lr,
                              weight_decay=optimizer.weight_decay)
            else:
                gradient[bias] = sums
                spans += [weights, bias]
        if fused:
            optimizer.iterations += 1
        else:
            optimizer.step(be, net.params, None, theta=net.theta, nabla_theta=gradient,
                           span=spans)
        self.shared.barrier()  # every rank's slices updated: the next forward reads them
        return float(cost_sum), correct
