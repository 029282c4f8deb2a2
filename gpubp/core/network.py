"""A fully connected network trained by explicit backpropagation.

This is the whole algorithm of ``DESIGN.md`` section 1, written once for every backend:

    forward    z^l = a^{l-1} W^l + b^l,  a^l = g(z^l)            (l = 1..L, a^0 = X)
    output     δ^L = (1/P) ∂c/∂a^L ⊙ g_o'(z^L)                    (a^L − y)/P when canonical
    hidden     δ^l = (δ^{l+1} W^{l+1 T}) ⊙ g'(z^l)
    gradients  ∂C/∂W^l = a^{l-1 T} δ^l,   ∂C/∂b^l = Σ_p δ^l_p
    update     θ ← θ − η ∂C/∂θ                                    (or momentum / Adam)

Everything array-shaped goes through the :class:`~gpubp.backends.Backend`: this module
never touches a device array with NumPy. Workspaces (activations ``a^l``, errors ``δ^l``,
gradients) are allocated once, for the largest batch seen, and smaller batches use
leading-row views of them, so a training step allocates nothing.

What it is not: a general autodiff framework. Layers are dense, the cost is a mean over
the batch, and the gradient is the derivation above, not a traced graph.
"""

import numbers

import numpy as np

from gpubp import activations, losses
from gpubp.data import mapped
from gpubp.core import metrics
from gpubp.backends import get_backend, resolve_device
from gpubp.data.inputs import check_sample_weight, check_sparse_X, is_sparse
from gpubp.data.validation import check_X, check_Y
from gpubp.core.layout import layer_views, row_blocks


DTYPES = ("float32", "float64")
CHUNK = 1024  # rows per pass when predicting or evaluating large inputs


class Network:
    """A multilayer perceptron ``n_0 → n_1 → … → n_L``.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths ``[n_0, n_1, ..., n_L]``, at least an input and an output layer.
    hidden : str or sequence of str
        Activation of the hidden layers (one name, or one per hidden layer):
        ``"sigmoid"``, ``"tanh"``, ``"relu"`` or ``"identity"``.
    output : str
        Output activation: one of the hidden ones or ``"softmax"``.
    loss : str or None
        ``"mse"``, ``"binary_cross_entropy"`` (sigmoid output) or ``"cross_entropy"``
        (softmax output). None picks the canonical loss of ``output`` (``mse`` for the
        elementwise ones other than sigmoid).
    device : {"cpu", "cuda", "auto"} or None
        Where to train. None reads ``$GPUBP_DEVICE`` (default ``"cpu"``). ``"cuda"`` on a
        machine without a usable GPU warns and uses the CPU (``fallback=False`` raises).
    dtype : {"float32", "float64"}
    seed : int or None
        Seed of the initial weights and of the shuffling in :meth:`fit`.
    backend : {"reference", "cpu", "cuda"} or None
        Force a backend; None picks the fastest one for the device.
    fallback : bool
        Whether ``device="cuda"`` may fall back to the CPU.
    **backend_options
        Passed to the backend (e.g. ``weight_grad="fused" | "cublas"`` on ``cuda``).

    Attributes
    ----------
    device : str
        The device actually used, ``"cpu"`` or ``"cuda"``.
    backend : Backend
    L : int
        Number of weight layers.
    theta : backend array, shape (N,)
        Every parameter in one contiguous vector: ``W^1`` (row-major), ``b^1``, ``W^2``,
        ``b^2``, ... ``W`` and ``b`` (lists of ``L`` arrays shaped ``(n_{l-1}, n_l)`` and
        ``(n_l,)``) are views into it.
    nabla_theta : backend array, shape (N,)
        The gradient of the last backward pass, laid out as ``theta``; ``nabla_w`` and
        ``nabla_b`` are views into it.
    layer_slices : list of slice
        ``layer_slices[l]`` is the block of layer ``l + 1`` (its ``W`` then its ``b``) in
        ``theta`` and ``nabla_theta``.
    """

    def __init__(self, sizes, hidden="sigmoid", output="softmax", loss=None, device=None,
                 dtype="float32", seed=None, backend=None, fallback=True, **backend_options):
        self.sizes = _check_sizes(sizes)
        self.L = len(self.sizes) - 1
        self.hidden = _check_hidden(hidden, self.L - 1)
        self.output = activations.check_activation(output, "output", activations.OUTPUT)
        self.loss_name = losses.check_pairing(self.output, loss)
        if str(dtype) not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.dtype = np.dtype(str(dtype))
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"seed must be an integer or None, got {seed!r}")
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.device = resolve_device(device, fallback=fallback)
        self.backend = get_backend(self.device, backend, **backend_options)
        self.activation_names = self.hidden + [self.output]  # g of layer l is [l - 1]
        W0 = [activations.init_weights(self.rng, n_in, n_out, g, self.dtype)
              for n_in, n_out, g in zip(self.sizes[:-1], self.sizes[1:], self.activation_names)]
        b0 = [np.zeros(n, dtype=self.dtype) for n in self.sizes[1:]]
        self._allocate_parameters()
        self.set_params(W0, b0)

    # -- construction ---------------------------------------------------------------
    def _allocate_parameters(self):
        """One flat buffer for all parameters, one for all gradients; per-layer views.

        ``theta`` holds ``W^1`` (row-major), ``b^1``, ``W^2``, ``b^2``, ... back to back, and
        ``nabla_theta`` the gradients in the same order, so that an optimizer updates every
        parameter in one fused call and a data-parallel reduction sends one message; a
        layer's block ``layer_slices[l]`` can go as soon as backpropagation produces it.
        """
        be, dt = self.backend, self.dtype
        shapes = list(zip(self.sizes[:-1], self.sizes[1:]))
        ends = np.cumsum([n_in * n_out + n_out for n_in, n_out in shapes]).tolist()
        self.layer_slices = [slice(start, end) for start, end in zip([0] + ends[:-1], ends)]
        self.theta = be.empty((ends[-1],), dt)
        self.nabla_theta = be.zeros((ends[-1],), dt)
        self.W, self.b = layer_views(self.theta, self.sizes)
        self.nabla_w, self.nabla_b = layer_views(self.nabla_theta, self.sizes)
        self._capacity = 0  # rows of the workspaces below
        self.activations = None  # a^0 .. a^L, each (capacity, n_l)
        self.deltas = None  # δ^1 .. δ^L at [1..L]; [0] unused
        self.targets = None  # y, (capacity, n_L)
        self._sparse_a0 = None  # the loaded batch when X is sparse (a^0 is then unused)
        self._weighted = False  # whether the loaded rows carry weights (_row_weights)

    def _workspace(self, P):
        """Make sure the workspaces hold ``P`` rows; grow (never shrink) them if needed.

        The activations ``a^0..a^L`` are consecutive blocks of one flat buffer, and so
        are the errors ``δ^1..δ^L``, each block ``(P, n_l)`` row-major: the leading-row
        views a smaller batch uses are contiguous, and the compiled CPU epoch
        (:mod:`gpubp.core.compiled`) reaches every layer through one buffer and its offsets.
        """
        if P <= self._capacity:
            return
        be, dt = self.backend, self.dtype
        self._activations_flat = be.empty((P * sum(self.sizes),), dt)
        self._deltas_flat = be.empty((P * sum(self.sizes[1:]),), dt)
        self.activations = row_blocks(self._activations_flat, P, self.sizes)
        self.deltas = [None] + row_blocks(self._deltas_flat, P, self.sizes[1:])
        self.targets = be.empty((P, self.sizes[-1]), dt)
        self._row_weights = be.empty((P,), dt)  # w_p of weighted rows (see _load)
        self._host_x = np.empty((P, self.sizes[0]), dt)  # staging rows for shuffled batches
        self._host_y = np.empty((P, self.sizes[-1]), dt)
        self._capacity = P

    def _move_buffer(self, name, flat, copy=True):
        """Make ``flat`` hold ``theta`` or ``nabla_theta`` (``name``) from now on.

        The values are copied into ``flat`` (shape (N,), the dtype, on the backend; unless
        ``copy`` is False: it holds them already), which becomes the attribute, with
        ``W``/``b`` (or ``nabla_w``/``nabla_b``) as its views:
        a data-parallel run puts them in memory the ranks of a machine share
        (:class:`gpubp.distributed.reductions.SharedMemoryGradientSum`). Returns the previous
        buffer, to move them back with.
        """
        current = getattr(self, name)
        if flat.shape != current.shape or flat.dtype != current.dtype:
            raise ValueError(f"flat must have shape {current.shape} and dtype "
                             f"{current.dtype}, got {flat.shape} {flat.dtype}")
        if copy:
            self.backend.copyto(flat, current)
        setattr(self, name, flat)
        views = layer_views(flat, self.sizes)
        if name == "theta":
            self.W, self.b = views
        else:
            self.nabla_w, self.nabla_b = views
        return current

    @property
    def params(self):
        """Backend arrays ``[W^1, b^1, W^2, b^2, ...]`` (live, not copies)."""
        return [p for pair in zip(self.W, self.b) for p in pair]

    @property
    def grads(self):
        """Backend arrays ``[∂W^1, ∂b^1, ...]`` from the last backward pass, aligned with ``params``."""
        return [g for pair in zip(self.nabla_w, self.nabla_b) for g in pair]

    @property
    def is_classifier(self):
        return losses.is_classifier(self.loss_name)

    def __repr__(self):
        return (f"Network({self.sizes}, hidden={self.hidden}, output={self.output!r}, "
                f"loss={self.loss_name!r}, device={self.device!r}, "
                f"backend={self.backend.name!r}, dtype={self.dtype.name!r})")

    # -- parameters -----------------------------------------------------------------
    def get_params(self):
        """NumPy copies of the parameters.

        Returns
        -------
        W : list of ndarray
            ``W[l].shape == (n_l, n_{l+1})`` (0-based ``l``).
        b : list of ndarray
            ``b[l].shape == (n_{l+1},)``.
        """
        return ([self.backend.to_host(w) for w in self.W],
                [self.backend.to_host(b) for b in self.b])

    def set_params(self, W, b):
        """Validate ``W`` and ``b`` (shapes as :meth:`get_params`) and copy them onto the device."""
        for name, given, shapes in (
            ("W", W, list(zip(self.sizes[:-1], self.sizes[1:]))),
            ("b", b, [(n,) for n in self.sizes[1:]]),
        ):
            if not isinstance(given, (list, tuple)) or len(given) != self.L:
                got = len(given) if isinstance(given, (list, tuple)) else type(given).__name__
                raise ValueError(f"{name} must be a list of {self.L} arrays, got {got}")
            for l, (arr, shape) in enumerate(zip(given, shapes)):
                arr = np.asarray(arr)
                if arr.dtype.kind not in "biuf":
                    raise TypeError(f"{name}[{l}] must hold real numbers, got dtype {arr.dtype}")
                if arr.shape != shape:
                    raise ValueError(f"{name}[{l}] must have shape {shape}, got {arr.shape}")
                if not np.isfinite(arr).all():
                    raise ValueError(f"{name}[{l}] must be finite, got NaN or infinite values")
        for dst, src in zip(self.W + self.b, list(W) + list(b)):
            self.backend.to_device(np.ascontiguousarray(src, dtype=self.dtype), out=dst)

    # -- the algorithm ----------------------------------------------------------------
    def _load(self, X, Y=None, index=None, weights=None):
        """Copy rows of host ``X`` (and ``Y``) into ``a^0`` (and ``y``); return the row count.

        ``index`` selects rows (a shuffled mini-batch); they are gathered into preallocated
        host staging buffers first, so that no step allocates and only the batch crosses
        to the device. A SciPy sparse ``X`` (CSR) stays sparse: its rows go to the device
        as a sparse matrix that the first layer multiplies (see :meth:`_forward`).
        ``weights`` (P_total,) are per-example weights ``s_p`` of the rows (see
        :meth:`_backward`); None weighs every row alike.
        """
        P = len(index) if index is not None else X.shape[0]
        self._workspace(P)
        self._sparse_a0 = None
        host_index = index
        if index is not None and not isinstance(index, np.ndarray):
            host_index = self.backend.to_host(index)  # a device-resident order (fit on a GPU)
        if is_sparse(X):
            rows = X[host_index] if index is not None else X
            self._sparse_a0 = self.backend.sparse_to_device(rows)
            X = None
        for src, buf, dev in ((X, self._host_x, self.activations[0]),
                              (Y, self._host_y, self.targets)):
            if src is not None:
                # host arrays (a memory-mapped file's rows are read, not mapped), or the
                # device copies of backend.resident (fit on a GPU)
                self.backend.gather_rows(src, index, dev[:P], buf[:P])
        self._weighted = weights is not None
        if self._weighted:
            s = np.asarray(weights[host_index] if index is not None else weights, np.float64)
            total = s.sum()
            # w_p = s_p P / Σs, so that the mean over the rows of w_p c_p is Σ s_p c_p / Σ s_p
            w = s * (P / total) if total > 0 else np.zeros_like(s)
            self.backend.to_device(w.astype(self.dtype), out=self._row_weights[:P])
        return P

    def _forward(self, P):
        """Feed-forward over the first ``P`` rows of ``a^0``; returns the view ``a^L``."""
        be, a = self.backend, self.activations
        for l in range(1, self.L + 1):
            if l == 1 and self._sparse_a0 is not None:  # sparse a^0: a sparse x dense product
                be.sparse_matmul(self._sparse_a0, self.W[0], out=a[1][:P])
            else:
                be.matmul(a[l - 1][:P], self.W[l - 1], out=a[l][:P])  # z^l = a^{l-1} W^l
            be.bias_activation(a[l][:P], self.b[l - 1], self.activation_names[l - 1])
        return a[self.L][:P]

    def _backward(self, P, reduction=None):
        """Backpropagate from the loaded targets; fills ``nabla_w``/``nabla_b``, returns ``C``.

        ``reduction`` (a :class:`gpubp.distributed.ranks.GradientSum`, data-parallel training)
        rescales ``δ^L`` from ``1/P`` to ``1/P_global`` and is told as each layer's
        gradient is final, so that it can start summing it over the ranks.

        With weighted rows the cost is ``C = Σ_p s_p c_p / Σ_p s_p``: each row of the
        seed ``δ^L`` is scaled by ``w_p = s_p P / Σ s`` (it carries ``1/P`` already), and
        everything below it follows unchanged.
        """
        be, a, delta, L = self.backend, self.activations, self.deltas, self.L
        cost = be.output_delta(a[L][:P], self.targets[:P], self.output, self.loss_name,
                               delta[L][:P])
        if self._weighted:
            w = self._row_weights[:P]
            delta[L][:P] *= w[:, None]
            cost = be.weighted_cost(a[L][:P], self.targets[:P], self.loss_name, w)
        if reduction is not None and reduction.delta_scale != 1.0:
            delta[L][:P] *= reduction.delta_scale
        for l in range(L, 0, -1):
            if l == 1 and self._sparse_a0 is not None:
                be.sparse_weight_bias_gradients(self._sparse_a0, delta[1][:P],
                                                self.nabla_w[0], self.nabla_b[0])
            else:
                be.weight_bias_gradients(a[l - 1][:P], delta[l][:P],
                                         self.nabla_w[l - 1], self.nabla_b[l - 1])
            if reduction is not None:
                reduction.layer_done(l - 1)
            if l > 1:
                be.matmul(delta[l][:P], self.W[l - 1].T, out=delta[l - 1][:P])
                be.hidden_delta(delta[l - 1][:P], a[l - 1][:P], self.activation_names[l - 2])
        return cost

    def _update(self, optimizer):
        """Apply ``optimizer`` to every parameter from ``nabla_theta``: one fused call."""
        optimizer.step(self.backend, self.params, self.grads, theta=self.theta,
                       nabla_theta=self.nabla_theta)

    def _count_correct(self, P):
        """Correct predictions of the last forward pass over ``P`` loaded rows (a backend
        scalar: no synchronisation)."""
        return self.backend.count_correct(self.activations[self.L][:P], self.targets[:P],
                                          self.loss_name)

    def _train_step(self, optimizer, X, Y, index=None, reduction=None, P_global=None,
                    weights=None):
        """One gradient-descent step on a mini-batch; returns the batch's mean cost.

        The step is load, forward, backward, update: a data-parallel run reduces
        ``nabla_theta`` between the last two. The cost may be a backend scalar (a device
        array on CUDA): converting it to a float would synchronise, so callers accumulate
        it and convert once per epoch. The outputs ``a^L`` of the batch stay in the
        workspace (see :meth:`_count_correct`).

        With ``reduction`` (data-parallel training, see :mod:`gpubp.distributed.ranks`) the rows
        ``index`` are this rank's share of a global batch of ``P_global`` rows, possibly
        none; the gradients are summed over the ranks before the update. ``weights``
        (P_total,): the rows' sample weights (see :meth:`_load`), one process only.
        """
        if reduction is None:
            P = self._load(X, Y, index, weights=weights)
            self._forward(P)
            cost = self._backward(P)
            self._update(optimizer)
        else:
            P = len(index)
            reduction.begin(P, P_global)
            if P:
                self._load(X, Y, index)
                self._forward(P)
                cost = self._backward(P, reduction)
            else:  # no row of this batch here: add zeros to the sum
                cost = 0.0
                for l in range(self.L - 1, -1, -1):
                    self.nabla_theta[self.layer_slices[l]] = 0
                    reduction.layer_done(l)
            reduction.wait()
            reduction.update(optimizer)
        return cost, P

    # -- public API ------------------------------------------------------------------------
    def _check_X(self, X):
        if is_sparse(X):
            return check_sparse_X(X, self.sizes[0], self.dtype)
        return check_X(X, self.sizes[0], self.dtype)

    def _check_XY(self, X, Y):
        X = self._check_X(X)
        return X, check_Y(Y, X.shape[0], self.sizes[-1], self.loss_name, self.dtype)

    def _chunks(self, P, *arrays):
        """Row slices of at most one workspace (or ``CHUNK``) rows covering ``P`` rows.

        The pages of memory-mapped ``arrays`` read through these slices are released as
        the pass goes, so that a file larger than memory stays out of resident memory.
        """
        step = max(self._capacity, CHUNK)
        pages = mapped.PageBudget(arrays)
        for start in range(0, P, step):
            yield slice(start, min(start + step, P))
            pages.touched(min(step, P - start))
        pages.release()

    def forward(self, X):
        """Output activations ``a^L``.

        Parameters
        ----------
        X : array-like, shape (P, n_0)

        Returns
        -------
        ndarray, shape (P, n_L)
        """
        X = self._check_X(X)
        out = np.empty((X.shape[0], self.sizes[-1]), dtype=self.dtype)
        for rows in self._chunks(X.shape[0], X):
            P = self._load(X[rows])
            out[rows] = self.backend.to_host(self._forward(P))
        return out

    def _cost_and_gradients(self, X, Y, want_gradients, sample_weight=None):
        """Mean (or ``sample_weight``-weighted mean) cost over all rows and, optionally,
        its exact gradient as host arrays ``dW``, ``db``."""
        cost, grad = self._cost_and_flat_gradient(X, Y, want_gradients, sample_weight)
        if grad is None:
            return cost, None, None
        return (cost, *layer_views(grad, self.sizes))

    def _cost_and_flat_gradient(self, X, Y, want_gradient, sample_weight=None):
        """Full-batch cost and its gradient laid out as ``theta`` (a host array), computed
        chunk by chunk on the backend: each chunk's gradient is that of its own (weighted)
        mean, so it is reweighted by its share of the rows (or of the total weight)."""
        P_total = X.shape[0]
        weight_total = P_total if sample_weight is None else float(sample_weight.sum())
        total = 0.0
        grad = np.zeros(self.theta.shape, self.dtype) if want_gradient else None
        for rows in self._chunks(P_total, X, Y):
            chunk_weights = None if sample_weight is None else sample_weight[rows]
            share = ((rows.stop - rows.start) if sample_weight is None
                     else float(chunk_weights.sum())) / weight_total
            if share == 0:
                continue  # rows of weight zero contribute nothing
            P = self._load(X[rows], Y[rows], weights=chunk_weights)
            self._forward(P)
            total += float(self._backward(P)) * share
            if want_gradient:
                grad += self.backend.to_host(self.nabla_theta) * share
        return total, grad

    def loss(self, X, Y, sample_weight=None):
        """Mean over the P examples of the per-example cost, as a float.

        ``sample_weight`` (P,) makes it the weighted mean ``Σ_p s_p c_p / Σ_p s_p``.
        ``X`` may be a SciPy sparse matrix.
        """
        X, Y = self._check_XY(X, Y)
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        return self._cost_and_gradients(X, Y, False, sample_weight)[0]

    def gradients(self, X, Y, sample_weight=None):
        """Exact gradient of :meth:`loss` (with the same ``sample_weight``).

        Returns
        -------
        dW, db : list of ndarray
            Shaped like ``W`` and ``b`` of :meth:`get_params`.
        """
        X, Y = self._check_XY(X, Y)
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        return self._cost_and_gradients(X, Y, True, sample_weight)[1:]

    def predict(self, X):
        """Class labels for classifiers, output activations for regressors.

        Returns
        -------
        ndarray
            ``(P,)`` int labels for softmax or a single sigmoid output, ``(P, n_L)`` 0/1
            labels for several sigmoid outputs (multi-label), ``(P, n_L)`` floats for
            regressors.
        """
        a = self.forward(X)
        return metrics.labels(a, self.loss_name)

    def evaluate(self, X, Y):
        """``{"loss": mean cost, "accuracy": fraction correct}`` (accuracy for classifiers)."""
        X, Yc = self._check_XY(X, Y)
        result = {"loss": self._cost_and_gradients(X, Yc, want_gradients=False)[0]}
        if self.is_classifier:
            result["accuracy"] = metrics.accuracy(self.forward(X), Yc, self.loss_name)
        return result

    def fit(self, X, Y, epochs=10, batch_size=32, lr=None, shuffle=True, tol=None,
            validation_data=None, verbose=1, optimizer="sgd", *, validation_split=0.0,
            schedule=None, weight_decay=None, early_stopping=None, callbacks=None,
            checkpoint=None, checkpoint_every=1, resume=None, gradient_flow=False,
            distributed=False):
        """Mini-batch gradient descent (the loop itself is :func:`gpubp.training.loop.fit`).

        Parameters
        ----------
        X : array-like, shape (P, n_0)
            A list, NumPy or CuPy array, or anything with ``__array__`` or ``__dlpack__``.
            A memory-mapped ``.npy`` (``np.load(path, mmap_mode="r")``) of the network's
            dtype is never read whole: checks run in chunks, batches gather their rows.
        Y : array-like, shape (P, n_L), or (P,) integer labels for classifiers
        epochs : int
            Epochs to train in all (a resumed run continues up to this number).
        batch_size : int
            Examples per step; the last batch of an epoch may be shorter.
        lr : float or None
            Base learning rate (None: the optimizer's own, 0.1 for SGD, 1e-3 for Adam).
        shuffle : bool
            Reshuffle the examples every epoch (with the network's seeded generator).
        tol : float or None
            Stop when the full-data gradient norm ``‖∇C‖`` falls to ``tol`` (checked at the
            end of each epoch, at the cost of one extra pass over the data).
        validation_data : tuple (X_val, Y_val) or None
            Evaluated after every epoch (``val_loss``, ``val_accuracy``).
        verbose : {0, 1, 2}
            0 silent, 1 a progress bar (hidden when output is not a terminal), 2 one line
            per epoch.
        optimizer : str or Optimizer
            ``"sgd"``, ``"momentum"``, ``"nesterov"``, ``"adam"`` or an
            :class:`~gpubp.optim.optimizers.Optimizer` (e.g. ``SGD(lr=0.1, momentum=0.9)``).
        validation_split : float
            Fraction of ``(X, Y)`` held out for validation (stratified for classifiers,
            drawn with the network's generator) instead of ``validation_data``.
        schedule : {"constant", "step", "cosine"}, Schedule or None
            Learning-rate schedule, replacing the optimizer's own when given.
        weight_decay : float or None
            L2 penalty ``λ`` (``∇C + λθ``), replacing the optimizer's own when given.
        early_stopping : bool, int, EarlyStopping or None
            Stop when the monitored figure (``val_loss`` with validation, else ``loss``)
            has not improved for ``patience`` epochs (an int is the patience, True means
            10) and restore the best parameters; an :class:`~gpubp.training.callbacks.EarlyStopping`
            chooses the figure, patience and mode.
        callbacks : sequence of Callback or None
            See :mod:`gpubp.training.callbacks`.
        checkpoint : str or os.PathLike or None
            Write a checkpoint there (atomically) every ``checkpoint_every`` epochs and
            after the last: parameters, optimizer state, epoch, generator state, history.
        checkpoint_every : int
        resume : str or os.PathLike or None
            Continue the run recorded in this checkpoint; with the same data and
            arguments the result equals that of an uninterrupted run, bit for bit
            (with ``distributed``, up to the order of additions, on any number of ranks).
        gradient_flow : bool
            Record, after each epoch, ``grad_norm_W{l}`` (``‖∂C/∂W^l‖``) and
            ``mean_abs_delta{l}`` (mean ``|δ^l|``) of every layer over the training data
            (one extra forward and backward pass per epoch); :meth:`History.plot` draws
            them. See :func:`gpubp.core.trace.gradient_flow`.
        distributed : bool or mpi4py communicator
            Data-parallel training over MPI (``True``: ``MPI.COMM_WORLD``; run the script
            under ``mpiexec -n R``). Every rank is given the same ``X, Y`` and arguments;
            ``batch_size`` is the global batch, split among the ranks, and the result is
            the single-process one. Rank 0 alone prints and writes checkpoints. See
            :mod:`gpubp.distributed.ranks`.

        Returns
        -------
        History
            Per-epoch ``loss``, ``lr`` and, where they apply, ``accuracy``, ``val_loss``,
            ``val_accuracy``, ``grad_norm``. ``loss`` and ``accuracy`` come from the
            epoch's batches, as Keras reports them: each batch's mean cost and fraction
            predicted right in its own forward pass (before its update), averaged over
            the epoch weighted by the batch's rows; no extra pass over the training data
            is made for them. :meth:`evaluate` gives the exact figures of the parameters
            at the end of the epoch, as ``val_loss``/``val_accuracy`` do for validation
            data; ``grad_norm`` (with ``tol``) is the full-data ``‖∇C‖``.

        Raises
        ------
        TrainingDiverged
            When an epoch's loss is not finite; the parameters are restored to those at
            the start of that epoch, the last finite ones.
        """
        from gpubp.training.loop import fit

        return fit(self, X, Y, epochs=epochs, batch_size=batch_size, lr=lr, shuffle=shuffle,
                   tol=tol, validation_data=validation_data, verbose=verbose,
                   optimizer=optimizer, validation_split=validation_split, schedule=schedule,
                   weight_decay=weight_decay, early_stopping=early_stopping,
                   callbacks=callbacks, checkpoint=checkpoint,
                   checkpoint_every=checkpoint_every, resume=resume,
                   gradient_flow=gradient_flow, distributed=distributed)

    def trace(self, X, Y):
        """Every quantity of backpropagation on the batch ``(X, Y)``, as NumPy arrays.

        Returns a :class:`gpubp.core.trace.Trace` with ``a`` (``a^0 = X`` … ``a^L``) and, for
        layer ``l`` at index ``l − 1``, ``z``, ``delta`` (``δ^l = ∂C/∂z^l``, with the 1/P
        of the mean cost), ``dW`` and ``db``; see :mod:`gpubp.core.trace`.
        """
        from gpubp.core.trace import trace

        return trace(self, X, Y)

    def to_onnx(self, path):
        """Write the forward pass to ``path`` as an ONNX model (atomically); returns ``path``.

        Input ``"X"`` ``(N, n_0)``, output ``"output"`` ``(N, n_L)`` = :meth:`forward`,
        in the network's dtype; see :mod:`gpubp.io.onnx` (needs ``gpubp[onnx]``).
        """
        from gpubp.io.onnx import to_onnx

        return to_onnx(self, path)

    def save(self, path):
        """Write the network to ``path`` (``.npz``), atomically; see :func:`gpubp.io.model.save`."""
        from gpubp.io.model import save

        save(self, path)


def _check_sizes(sizes):
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
        raise TypeError(f"sizes must be a list of layer widths, got {sizes!r}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output width, got {sizes}")
    for n in sizes:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise TypeError(f"sizes must hold integers, got {n!r} in {sizes}")
        if n < 1:
            raise ValueError(f"sizes must hold positive widths, got {n} in {sizes}")
    return [int(n) for n in sizes]


def _check_hidden(hidden, n_hidden):
    if isinstance(hidden, str):
        return [activations.check_activation(hidden, "hidden", activations.HIDDEN)] * n_hidden
    hidden = list(hidden)
    if len(hidden) != n_hidden:
        raise ValueError(f"hidden must be one name or {n_hidden} names (one per hidden layer), "
                         f"got {len(hidden)}")
    return [activations.check_activation(h, f"hidden[{i}]", activations.HIDDEN)
            for i, h in enumerate(hidden)]
