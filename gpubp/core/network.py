"""A fully connected network trained by explicit backpropagation: :class:`Network`.

The network holds the parameters (one flat ``theta``, per-layer views), the workspaces
and the public API; its passes over data that train nothing (forward to evaluate) are
:mod:`gpubp.core.evaluation`, the per-example terms :mod:`gpubp.core.per_example`. The
algorithm itself (load, forward, backward, one step) is :mod:`gpubp.core.backprop`,
written once over the Backend contract, and a step reduces its gradient through
:mod:`gpubp.core.reduction` (the identity for one process). The only imports from the
layers above: :meth:`Network.fit` (:mod:`gpubp.training.loop`), :meth:`Network.save`
(:mod:`gpubp.io.model`), :meth:`Network.to_onnx` (:mod:`gpubp.io.onnx`) and
:meth:`Network.to_torch` (:mod:`gpubp.io.torch_weights`), each inside its method.

What it is not: a general autodiff framework. Layers are dense, the cost is a mean over
the batch, and the gradient is the derivation of ``DESIGN.md`` §1, not a traced graph.
"""

import numpy as np

from gpubp import activations, losses
from gpubp.data import mapped
from gpubp.core import backprop, checks, describe, layout, state
from gpubp.core.evaluation import Evaluation
from gpubp.core.per_example import PerExample
from gpubp.core.reduction import Identity
from gpubp.backends import get_backend, resolve_device
from gpubp.core import trace as tracing
from gpubp.core.dropout import check_rates
from gpubp.backends.base import check_options
from gpubp.data.validation import check_dtype


# the keyword arguments of Network() itself (an unknown one is a TypeError that lists them)
ARGUMENTS = ("sizes", "hidden", "output", "loss", "device", "dtype", "seed", "backend",
             "fallback", "dropout", "negative_slope", "init", "label_smoothing", "huber_delta")
CHUNK = 1024  # rows per pass when predicting or evaluating large inputs


class Network(Evaluation, PerExample):
    """A multilayer perceptron ``n_0 → n_1 → … → n_L``.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths ``[n_0, n_1, ..., n_L]``, at least an input and an output layer.
    hidden : str or sequence of str
        Activation of the hidden layers (one name, or one per hidden layer), one of
        ``gpubp.activations.HIDDEN``: sigmoid, tanh, relu, identity, and PyTorch's
        leaky_relu, elu, selu, softplus, gelu (exact), gelu_tanh, silu.
    output : str
        Output activation, one of ``gpubp.activations.OUTPUT``: the hidden ones,
        ``"softmax"`` or ``"exp"``.
    loss : str or None
        One of ``gpubp.losses.NAMES``: ``"mse"``, ``"binary_cross_entropy"`` (sigmoid
        output), ``"cross_entropy"`` (softmax output), ``"poisson"`` (exp output), or
        ``"huber"`` / ``"l1"`` (elementwise outputs, as ``mse``). None picks the canonical
        loss of ``output`` (``mse`` for the elementwise ones other than sigmoid).
    device : {"cpu", "cuda", "auto"} or None
        Where to train. None reads ``$GPUBP_DEVICE`` (default ``"cpu"``). ``"cuda"`` on a
        machine without a usable GPU warns and uses the CPU (``fallback=False`` raises).
    dtype : {"float32", "float64"} or any NumPy spelling of them
        ``np.float32``, ``np.dtype("float32")``, ``"f4"``, ``"single"``, ``np.float64``,
        ``float``, ``"f8"``, ``"double"``, ...; anything else is refused.
    seed : int or None
        Seed of the initial weights and of the shuffling in :meth:`fit`.
    backend : {"reference", "cpu", "cuda"} or None
        Force a backend; None picks the fastest one for the device.
    fallback : bool
        Whether ``device="cuda"`` may fall back to the CPU.
    dropout : float or sequence of float
        Inverted dropout in :meth:`fit`: rate ``0 <= p < 1`` of every hidden layer (one
        number) or of each; :mod:`gpubp.core.dropout`. Nothing else ever drops.
    negative_slope : float >= 0 or None
        leaky_relu's slope for ``z < 0`` (PyTorch's name; None: 0.01); refused without one.
    init : str, callable or None
        A rule of ``gpubp.activations.INITS``, ``init(shape, rng) -> W``, or None (by g).
    label_smoothing, huber_delta : float
        The loss's parameter (:mod:`gpubp.losses`): ``ε`` in [0, 1) of the log-losses
        (PyTorch's; Keras's for binary), ``δ > 0`` of ``huber`` (PyTorch's).
    **backend_options
        Passed to the backend (e.g. ``weight_grad="fused" | "cublas"`` and
        ``precision="tf32"`` (TF32 float32 GEMMs) on ``cuda``; the options of another
        backend are checked and ignored, so that ``device="cuda"`` may fall back). Any other keyword is a TypeError, as Python's own "got an
        unexpected keyword argument", naming it and listing the valid ones.

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

    Notes
    -----
    A network pickles and copies exactly, on every backend (:mod:`gpubp.core.state`).
    """

    def __init__(self, sizes, hidden="sigmoid", output="softmax", loss=None, device=None,
                 dtype="float32", seed=None, backend=None, fallback=True, dropout=0.0,
                 negative_slope=None, init=None, *, label_smoothing=0.0, huber_delta=1.0,
                 **backend_options):
        check_options(backend_options, backend if isinstance(backend, str) else "cpu",
                      caller="Network()", arguments=ARGUMENTS)
        self.sizes = checks.check_sizes(sizes)
        self.L = len(self.sizes) - 1
        self.hidden = checks.check_hidden(hidden, self.L - 1)
        self.dropout = check_rates(dropout, self.L - 1)
        self.output = activations.check_activation(output, "output", activations.OUTPUT)
        self.loss_name = losses.check_pairing(self.output, loss, activations.ACTIVATIONS)
        self.loss_param = losses.loss_param(self.loss_name, label_smoothing=label_smoothing,
                                            huber_delta=huber_delta)
        self.dtype = check_dtype(dtype)
        self.seed = checks.check_seed(seed)
        checks.check_flag(fallback, "fallback")
        self.rng = np.random.default_rng(seed)
        self.device = resolve_device(device, fallback=fallback)
        self.backend = get_backend(self.device, backend, **backend_options)
        self.activation_names = self.hidden + [self.output]  # g of layer l is [l - 1]
        self.negative_slope = activations.check_negative_slope(negative_slope, self.hidden)
        self._allocate_parameters()
        self.set_params(*layout.initial_parameters(self.rng, self.sizes, self.activation_names,
                                                   self.dtype, activations.check_init(init)))

    _allocate_parameters = layout.allocate_parameters

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

    # -- pickling and copying: gpubp.core.state ----------------------------------------
    __getstate__ = state.getstate
    __setstate__ = state.setstate
    summary = describe.summary  # the Keras-style table: gpubp.core.describe

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
        for dst, src in zip(self.W + self.b, checks.check_params(W, b, self.sizes, self.dtype)):
            self.backend.to_device(src, out=dst)

    # -- the algorithm: gpubp.core.backprop, one method each ---------------------------
    _workspace = backprop.workspace
    _load = backprop.load
    _forward = backprop.forward
    _update = backprop.update
    _count_correct = backprop.count_correct
    _cost_and_flat_gradient = backprop.cost_and_flat_gradient
    _cost_and_gradients = backprop.cost_and_gradients

    def _backward(self, P):
        """:func:`~gpubp.core.backprop.backward` of one process (the identity reduction)."""
        return backprop.backward(self, P, Identity(self))

    def _train_step(self, optimizer, X, Y, index=None, weights=None):
        """:func:`~gpubp.core.backprop.train_step` of one process: ``(cost, P)``;
        ``weights`` (P_total,) the rows' sample weights (see :meth:`_load`)."""
        return backprop.train_step(self, optimizer, X, Y, index, Identity(self), weights=weights)

    # -- public API (forward, loss, gradients, predict, evaluate: gpubp.core.evaluation) ---
    _check_X = checks.check_inputs
    _check_XY = checks.check_inputs_and_targets

    def _chunks(self, P, *arrays):
        """Row slices of at most one workspace (or ``CHUNK``) rows covering ``P`` rows; the
        pages of memory-mapped ``arrays`` read through them are released as the pass goes."""
        return mapped.chunks(P, max(self._capacity, CHUNK), arrays)

    def fit(self, X, Y, epochs=10, batch_size=32, lr=None, shuffle=True, tol=None,
            validation_data=None, verbose=1, optimizer="sgd", *, validation_split=0.0,
            schedule=None, weight_decay=None, early_stopping=None, callbacks=None,
            checkpoint=None, checkpoint_every=1, resume=None, gradient_flow=False,
            distributed=False, clip_norm=None, clip_value=None, privacy=None,
            sample_weight=None, class_weight=None, cuda_graph="auto"):
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
        validation_data : tuple (X_val, Y_val[, sample_weight_val]) or None
            Evaluated after every epoch (``val_loss``, ``val_accuracy``); with weights, as
            in Keras, both are the weighted means of :meth:`evaluate`.
        verbose : {0, 1, 2}
            0 silent, 1 a progress bar (hidden when output is not a terminal), 2 one line
            per epoch.
        optimizer : str or Optimizer
            ``"sgd"``, ``"momentum"``, ``"nesterov"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``
            or an :class:`~gpubp.optim.optimizers.Optimizer` (``SGD(lr=0.1, momentum=0.9)``).
        validation_split : float
            Fraction of ``(X, Y)`` held out for validation (stratified for classifiers,
            drawn with the network's generator) instead of ``validation_data``.
        schedule : str, Schedule or None
            Replaces the optimizer's own when given: per epoch ``"constant"``, ``"step"``,
            ``"cosine"``; per step ``"warmup"``, ``"warmup_cosine"``, ``"one_cycle"``.
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
        distributed : bool, mpi4py communicator or Group
            Data-parallel training over MPI (``True``: ``MPI.COMM_WORLD``; run the script
            under ``mpiexec -n R``). Every rank is given the same ``X, Y`` and arguments;
            ``batch_size`` is the global batch, split among the ranks, and the result is
            the single-process one. Rank 0 alone prints and writes checkpoints.
            ``Group(comm, reduction=name)`` picks how the ranks combine their gradients
            (:mod:`gpubp.distributed.reductions`).
        clip_norm, clip_value : float or None
            Clip each step's (summed) ``∇θ`` by its global norm or by value, one of the two
            (:meth:`~gpubp.optim.base.Optimizer.set_clipping`).
        privacy : DPSGD or None
            Differentially private SGD (:mod:`gpubp.training.privacy`); ``"epsilon"`` in
            the History, the privacy spent, at the given δ, after each epoch.
        sample_weight, class_weight : (P,) weights ``s_p``; "balanced" or {class: weight}
            Batch costs ``Σ s_p c_p / Σ s_p`` (see :mod:`gpubp.training.class_weight`).
        cuda_graph : {"auto", True, False}
            On ``device="cuda"``, capture the whole step once per batch shape as a CUDA
            graph and replay it (:mod:`gpubp.training.graph_epoch`): "auto" where the run
            allows it (SGD or momentum, resident data, no dropout, weights, clipping or
            per-batch callbacks; checked bit for bit against an eager step once per
            process), eager steps otherwise; True: a ValueError where it cannot (and on
            the CPU backends); False: eager steps.

        Returns
        -------
        History
            Per-epoch ``loss``, ``lr`` and, where they apply, ``accuracy``, ``val_loss``,
            ``val_accuracy``, ``grad_norm``. ``loss`` and ``accuracy`` are those of the
            epoch's batches, as Keras reports them (no extra pass over the training data);
            :meth:`evaluate` gives the exact figures of the parameters at the end.

        Raises
        ------
        TrainingDiverged
            When an epoch's loss is not finite; the latest parameters whose training loss
            is finite are restored (its ``restored_epoch`` says which).
        """
        from gpubp.training.loop import fit  # a facade over the layer above (docs/design.md)

        return fit(self, X, Y, epochs=epochs, batch_size=batch_size, lr=lr, shuffle=shuffle,
                   tol=tol, validation_data=validation_data, verbose=verbose, optimizer=optimizer,
                   validation_split=validation_split, schedule=schedule,
                   weight_decay=weight_decay, early_stopping=early_stopping, callbacks=callbacks,
                   checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                   gradient_flow=gradient_flow, distributed=distributed, clip_norm=clip_norm,
                   clip_value=clip_value, privacy=privacy, sample_weight=sample_weight,
                   class_weight=class_weight, cuda_graph=cuda_graph)

    # every quantity of backpropagation on a batch: a Trace (a, z, delta, dW, db, masks)
    trace = tracing.trace

    def to_onnx(self, path):
        """Write the forward pass to ``path`` as an ONNX model (atomically); returns ``path``.

        Input ``"X"`` ``(N, n_0)``, output ``"output"`` ``(N, n_L)`` = :meth:`forward`,
        in the network's dtype; see :mod:`gpubp.io.onnx` (needs ``gpubp[onnx]``).
        """
        from gpubp.io.onnx import to_onnx  # a facade over the layer above

        return to_onnx(self, path)

    def to_torch(self):
        """The network as a ``torch.nn.Sequential``; see :func:`gpubp.io.torch_weights.to_torch`."""
        from gpubp.io.torch_weights import to_torch  # a facade over the layer above
        return to_torch(self)

    def save(self, path):
        """Write to ``path`` (``.npz``, ``.safetensors``) atomically: :func:`gpubp.io.model.save`."""
        from gpubp.io.model import save  # a facade over the layer above
        save(self, path)

