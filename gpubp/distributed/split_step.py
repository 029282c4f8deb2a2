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

from gpubp.core import backprop, compiled, dropout
from gpubp.core.layout import row_blocks
from gpubp.kernels.cpu_epoch import descend, gather_rows
from gpubp.optim.optimizers import SGD


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
        """Whether the step lands in W from the gradient's GEMM (plain SGD, no clipping,
        which needs the whole gradient first)."""
        return type(optimizer) is SGD and optimizer.momentum == 0 and not optimizer.clips

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
        # z^l where g' needs it (gelu, silu, ...): only this rank's rows read it, so its own
        self.zs = [None] + [np.empty((P, n), self.net.dtype) if n else None
                            for n in backprop.kept_z_widths(self.net)]
        self.targets = np.empty((-(-P // self.R), sizes[-1]), self.net.dtype)
        self.capacity = P

    def step(self, optimizer, X, Y, batch):
        """One step on the global batch ``batch`` (row indices of X and Y).

        The forward and backward passes are :mod:`gpubp.core.backprop`'s over this rank's
        rows of the shared blocks; only the weight gradients, which need every row, are
        the split step's own (:meth:`_layer_step`).

        Returns
        -------
        cost_sum : float
            Sum of the costs of this rank's rows.
        correct : int
            Correct predictions among them (0 for regressors).
        """
        net = self.net
        P = len(batch)
        self._workspace(P)
        rows = _share(P, self.k, self.R)
        P_k = rows.stop - rows.start
        a = [block[:P] for block in self.activations]
        d = [None] + [block[:P] for block in self.deltas[1:]]
        cost_sum, correct = 0.0, 0
        # this rank's rows' masks, by their places in the batch (every rank counts the step)
        drops = dropout.step_drops(net, P, first_row=rows.start)
        if P_k:
            order = np.ascontiguousarray(batch, dtype=np.int64)
            gather_rows(X, order, rows.start, a[0][rows])
            y = self.targets[:P_k]
            gather_rows(Y, order, rows.start, y)
            backprop.propagate(net, a, self.zs, rows, drops=drops)
            # δ^L with the global 1/P, as the single-process δ^L carries
            cost_sum = backprop.output_error(net, a[net.L][rows], y, d[net.L][rows],
                                             P_k / P) * P_k
            if net.is_classifier:
                correct = int(net.backend.count_correct(a[net.L][rows], y, net.loss_name))
        fused = self.fuses(optimizer)  # (the state exists: the shared sum moved it)
        lr = optimizer.current_lr()
        self.coefficients[:] = (-lr, 1 - lr * optimizer.weight_decay) if fused else (1, 0)
        spans = []
        backprop.backpropagate(
            net, a, self.zs, d, rows, lambda l: spans.extend(self._layer_step(l, a, d, optimizer)),
            errors_first=True, drops=drops)  # the update of W^l waits for δ^{l-1}, which reads it
        if fused:
            optimizer.iterations += 1
        else:
            optimizer.step(net.backend, net.params, None, theta=net.theta,
                           nabla_theta=self.shared.slots[0], span=spans)
        self.shared.barrier()  # every rank's slices updated: the next forward reads them
        return float(cost_sum), correct

    def _layer_step(self, l, a, d, optimizer):
        """This rank's rows of ``∂C/∂W^l`` and columns of ``∂C/∂b^l``, over every row of
        the batch, once every rank has written ``δ^l`` and read ``W^l``; with plain SGD
        applied to θ at once, otherwise written to the shared gradient.

        Returns the spans of θ written to the gradient (none when fused).
        """
        net = self.net
        self.shared.barrier()  # every δ^l written, W^l read by every rank
        fused = self.fuses(optimizer)
        n_in, n_out = net.sizes[l - 1], net.sizes[l]
        w = net.layer_slices[l - 1].start
        r, c = _share(n_in, self.k, self.R), _share(n_out, self.k, self.R)
        weights = slice(w + r.start * n_out, w + r.stop * n_out)
        bias = slice(w + n_in * n_out + c.start, w + n_in * n_out + c.stop)
        target = net.theta if fused else self.shared.slots[0]
        descend(target[weights].reshape(-1, n_out), a[l - 1], d[l], self.coefficients,
                r.start)
        sums = self.bias_sums[:c.stop - c.start]
        np.sum(d[l][:, c], axis=0, out=sums)
        if fused:
            net.backend.sgd_update(net.theta[bias], sums, None, optimizer.current_lr(),
                                   weight_decay=optimizer.weight_decay)
            return []
        target[bias] = sums
        return [weights, bias]
