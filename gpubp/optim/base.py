"""The optimizer base class: learning rate, schedule, decay, clipping and flat state.

The concrete optimizers (:mod:`gpubp.optim.optimizers`: SGD, Adam, AdamW, RMSprop) say
which fused kernel one step calls; everything they share lives here: the state as one flat
buffer per name laid out like ``Network.theta`` (with views per parameter), the learning
rate of each step from the schedule (per epoch, or per step), the clipping of the flat
gradient before the update, and the state's export to checkpoints.
"""

import math

import numpy as np

from gpubp.data.validation import check_positive
from gpubp.optim.schedules import Constant, get_schedule


class Optimizer:
    """Base class: a learning rate, a schedule, L2 weight decay and per-parameter state.

    Parameters
    ----------
    lr : float
        Base learning rate ``η``.
    weight_decay : float
        L2 penalty ``λ``: the update uses ``∇C + λ θ`` (``λ/2 ‖θ‖²`` added to the cost),
        for every parameter, as PyTorch's ``weight_decay``.
    schedule : str, Schedule or None
        How the rate changes from epoch to epoch, or from step to step (a schedule with
        ``per_step``: warm-up, one-cycle; None: constant).
    penalty : float
        L2 penalty ``α`` on the weights only (not the biases), per batch, as
        scikit-learn's ``alpha``: a batch of ``n`` rows (or of total sample weight ``n``)
        adds ``α ‖W‖² / (2n)`` to its cost, so ``α W / n`` to ``∂C/∂W``. The loop tells
        the optimizer each batch's ``n`` (:meth:`begin_batch`), which returns the term of
        the cost; the update adds the gradient.

    Attributes
    ----------
    iterations : int
        Steps taken (Adam's ``t``).
    clip_norm, clip_value : float
        Gradient clipping before each step (0: none; :meth:`set_clipping`).
    lr_reduced : float or None
        A base rate that replaces ``lr`` (set by
        :class:`~gpubp.training.callbacks.ReduceLROnPlateau`; None: ``lr``).
    flat_state : dict of str to backend array, or None
        One flat buffer per state name (``"velocity"``, ``"m"``, ``"v"``), laid out like
        the concatenated parameters, allocated on the first step.
    state : dict of str to list of backend arrays, or None
        The same buffers as views shaped like each parameter.
    """

    name = "optimizer"
    state_names = ()
    # whether each parameter's update reads only its own gradient and state (then any
    # span of the flat vector can be updated alone); subclasses that override _update
    # must say so themselves (:attr:`elementwise` adds the clipping)
    _elementwise = False

    def __init__(self, lr=0.1, weight_decay=0.0, schedule=None, penalty=0.0):
        self.lr = float(check_positive(lr, "lr"))
        self.weight_decay = float(check_positive(weight_decay, "weight_decay", allow_zero=True))
        self.penalty = float(check_positive(penalty, "penalty", allow_zero=True))
        self._penalty_scale = 0.0  # α / n of the batch in progress
        self.schedule = get_schedule(schedule)
        self.iterations = 0
        self.state = None
        self.flat_state = None
        self._epoch_lr = None
        self._steps = None  # the run's steps, for a per-step schedule (start_epoch)
        self.clip_norm = self.clip_value = 0.0
        self.lr_reduced = None

    @property
    def elementwise(self):
        """Whether each parameter's update reads only its own gradient and state (then
        any span of the flat vector can be updated alone): not with a clip by the norm,
        which reads the whole gradient."""
        return self._elementwise and not self.clip_norm

    @property
    def clips(self):
        """Whether the gradient is clipped before each step."""
        return bool(self.clip_norm or self.clip_value)

    def set_clipping(self, clip_norm=None, clip_value=None):
        """Clip every step's flat gradient: by its global 2-norm, to at most ``clip_norm``
        (PyTorch's ``clip_grad_norm_``: ``g ← g min(1, c / (‖g‖ + 1e-6))``), or each entry
        into ``[−clip_value, clip_value]`` (``clip_grad_value_``); None or 0: off. One of
        the two at most, as Keras allows one. In a data-parallel run the clip acts on the
        gradient summed over the ranks (the step receives the sum)."""
        values = []
        for value, name in ((clip_norm, "clip_norm"), (clip_value, "clip_value")):
            values.append(0.0 if value is None else
                          float(check_positive(value, name, allow_zero=True)))
        if values[0] and values[1]:
            raise ValueError(f"clip_norm and clip_value are exclusive, got clip_norm="
                             f"{clip_norm!r} and clip_value={clip_value!r}")
        self.clip_norm, self.clip_value = values
        return self

    def _hyperparameters(self):
        return {"lr": self.lr, "weight_decay": self.weight_decay, **self._penalty_config()}

    def _penalty_config(self):
        return {"penalty": self.penalty} if self.penalty else {}

    def get_config(self):
        """Hyperparameters as a JSON-able dict that :func:`from_config` rebuilds."""
        clipping = {key: value for key, value in (("clip_norm", self.clip_norm),
                                                  ("clip_value", self.clip_value)) if value}
        return {"name": self.name, **self._hyperparameters(),
                "schedule": self.schedule.get_config(), **clipping}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._hyperparameters().items())
        sched = "" if isinstance(self.schedule, Constant) else f", schedule={self.schedule!r}"
        return f"{type(self).__name__}({args}{sched})"

    def initialize(self, backend, params):
        """Allocate the zeroed state: one flat buffer per state name, viewed per parameter.

        Parameters
        ----------
        backend : Backend
        params : list of backend arrays
            The parameters, in the order of ``Network.params`` (that of ``Network.theta``).
        """
        self._shapes = [tuple(p.shape) for p in params]
        self._size = sum(math.prod(shape) for shape in self._shapes)
        self._hold({key: backend.zeros((self._size,), params[0].dtype)
                    for key in self.state_names})

    def __getstate__(self):
        # the per-parameter views would pickle as copies of their own, apart from the flat
        # buffers the fused step updates: they are rebuilt from those on unpickling
        state = dict(self.__dict__)
        state["state"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.flat_state is not None:
            self._hold(self.flat_state)

    def _hold(self, flat_state):
        """``flat_state`` (name -> (N,) buffer) becomes the state, with its views per
        parameter."""
        sizes = [math.prod(shape) for shape in self._shapes]
        self.flat_state = dict(flat_state)
        self.state = {key: _views(buf, self._shapes, sizes)
                      for key, buf in self.flat_state.items()}

    def _move_state(self, flat_state, copy=True):
        """Make the buffers of ``flat_state`` (name -> (N,) backend array) hold the state.

        The values are copied over (unless ``copy`` is False: they are there already) and
        the per-parameter views rebuilt; returns the previous buffers, to move it back
        with (as :func:`gpubp.distributed.shared_memory.move_flat` does the parameters).
        """
        previous = self.flat_state
        if copy:
            for key, buf in flat_state.items():
                buf[...] = previous[key]
        self._hold(flat_state)
        return previous

    def _base_lr(self):
        return self.lr if self.lr_reduced is None else self.lr_reduced

    def start_epoch(self, epoch, epochs, steps_per_epoch=None):
        """Set the learning rate of 0-based ``epoch`` from the schedule; returns it (that
        of the epoch's first step with a per-step schedule, which needs
        ``steps_per_epoch``: the run has ``epochs · steps_per_epoch`` steps)."""
        if not self.schedule.per_step:
            self._epoch_lr = float(self.schedule(self._base_lr(), epoch, epochs))
            return self._epoch_lr
        if steps_per_epoch is None:
            raise ValueError(f"steps_per_epoch: the per-step schedule {self.schedule!r} "
                             f"needs the steps of an epoch, got None")
        self._steps = int(epochs) * int(steps_per_epoch)
        return self.current_lr()

    def current_lr(self):
        """The learning rate for the next step."""
        if self.schedule.per_step:
            return self.step_lrs(1)[0]
        return self._base_lr() if self._epoch_lr is None else self._epoch_lr

    def step_lrs(self, n):
        """The learning rates of the next ``n`` steps, float64 (n,) (the compiled epoch
        takes one per step)."""
        if not self.schedule.per_step:
            return np.full(n, self.current_lr())
        if self._steps is None:
            raise ValueError(f"the per-step schedule {self.schedule!r} needs the run's "
                             f"length: call start_epoch(epoch, epochs, steps_per_epoch)")
        base = self._base_lr()
        return np.array([self.schedule(base, t, self._steps)
                         for t in range(self.iterations, self.iterations + n)], np.float64)

    @property
    def learning_rate(self):
        """The learning rate for the next step (scikit-learn's optimizers' name for it)."""
        return self.current_lr()

    def begin_batch(self, backend, params, n):
        """The next step is on a batch of ``n`` rows (or of total sample weight ``n``):
        with a :attr:`penalty`, set its gradient ``α W / n`` for the update and return its
        term ``α ‖W‖² / (2n)`` of the batch's cost (0.0 without one)."""
        if not self.penalty:
            return 0.0
        self._penalty_scale = self.penalty / n if n > 0 else 0.0
        xp = backend.xp
        return 0.5 * self._penalty_scale * sum(xp.vdot(p, p) for p in params if p.ndim == 2)

    def step(self, backend, params, grads, *, theta=None, nabla_theta=None, span=None):
        """Update every parameter in place from its gradient.

        Parameters
        ----------
        backend : Backend
        params, grads : list of backend arrays
            Aligned lists (``Network.params``, ``Network.grads``).
        theta, nabla_theta : backend array, shape (N,), optional
            The same parameters and gradients as one contiguous vector each, of which
            ``params`` and ``grads`` are views (``Network.theta``, ``Network.nabla_theta``).
            When given, the update is one fused kernel call over the whole vector;
            otherwise one call per parameter.
        span : slice or sequence of slices, optional
            With ``theta``: update ``theta[span]`` only (each span, one step), from
            ``nabla_theta[span]`` and the same span of the state (a rank's share of
            parameters that the ranks of a machine share, :mod:`gpubp.distributed.reductions`).
            Only for optimizers whose update is elementwise (:attr:`elementwise`).
        """
        if self.state is None:
            self.initialize(backend, params)
        if (theta is None) != (nabla_theta is None):
            raise ValueError("theta and nabla_theta must be given together, got only one")
        if self.clips:
            self._clip(backend, nabla_theta, span)
        lr = self.current_lr()
        self.iterations += 1
        if self.penalty:  # the weights' decay differs from the biases': one call each
            if span is not None:
                raise ValueError(f"span: {type(self).__name__} with a penalty updates its "
                                 f"parameters one by one")
            theta = nabla_theta = None
        if theta is not None:
            n = self._size
            if theta.shape != (n,) or nabla_theta.shape != (n,):
                raise ValueError(f"theta and nabla_theta must have shape ({n},), the total "
                                 f"size of params, got {theta.shape} and {nabla_theta.shape}")
            if span is None:
                self._update(backend, theta, nabla_theta, self.flat_state, lr)
            elif not self.elementwise:
                raise ValueError(f"span: {type(self).__name__} does not update elementwise")
            else:
                for part in [span] if isinstance(span, slice) else span:
                    self._update(backend, theta[part], nabla_theta[part],
                                 {k: buf[part] for k, buf in self.flat_state.items()}, lr)
            return
        for i, (param, grad) in enumerate(zip(params, grads)):
            state = {k: bufs[i] for k, bufs in self.state.items()}
            if self.penalty:
                decay = self.weight_decay + (self._penalty_scale if param.ndim == 2 else 0.0)
                self._update(backend, param, grad, state, lr, decay)
            else:
                self._update(backend, param, grad, state, lr)

    def _clip(self, backend, nabla_theta, span):
        """Clip the flat gradient in place before the update (see :meth:`set_clipping`)."""
        if nabla_theta is None:
            raise ValueError(f"nabla_theta: {type(self).__name__} clips the flat gradient, "
                             f"which must be given, got None")
        if span is not None and self.clip_norm:
            raise ValueError("span: a clip by the global norm reads the whole gradient")
        if span is None:
            backend.clip_gradient(nabla_theta, self.clip_norm, self.clip_value)
            return
        for part in [span] if isinstance(span, slice) else span:
            backend.clip_gradient(nabla_theta[part], 0.0, self.clip_value)

    def _update(self, backend, param, grad, state, lr, weight_decay=None):
        """One fused kernel call: ``param`` and ``state``'s buffers are laid out alike;
        ``weight_decay`` (None: :attr:`weight_decay`) is the decay of this span."""
        raise NotImplementedError

    # -- checkpoints ------------------------------------------------------------------
    def state_arrays(self, backend):
        """The state as host arrays ``{"velocity.0": ndarray, ...}`` (empty before a step)."""
        if self.state is None:
            return {}
        return {f"{key}.{i}": backend.to_host(buf)
                for key, bufs in self.state.items() for i, buf in enumerate(bufs)}

    def load_state(self, backend, params, iterations, arrays):
        """Restore the step count and the buffers written by :meth:`state_arrays`.

        Raises
        ------
        ValueError
            When a buffer is missing or does not match its parameter's shape.
        """
        self.iterations = int(iterations)
        if not arrays:
            self.state = self.flat_state = None
            return
        self.initialize(backend, params)
        for key, bufs in self.state.items():
            for i, buf in enumerate(bufs):
                name = f"{key}.{i}"
                if name not in arrays or arrays[name].shape != buf.shape:
                    got = arrays[name].shape if name in arrays else "missing"
                    raise ValueError(f"optimizer state {name!r} must have shape {buf.shape}, "
                                     f"got {got}")
                backend.to_device(np.ascontiguousarray(arrays[name], dtype=buf.dtype), out=buf)



def _views(flat, shapes, sizes):
    """Views of consecutive blocks of the 1-D ``flat``, shaped ``shapes`` (sizes ``sizes``)."""
    views, start = [], 0
    for shape, size in zip(shapes, sizes):
        views.append(flat[start:start + size].reshape(shape))
        start += size
    return views


