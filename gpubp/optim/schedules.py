"""Learning-rate schedules: the rate of each epoch, or of each step, from the base rate
(``Network.fit(schedule=...)``).

A schedule with ``per_step = False`` (constant, step, cosine, invscaling) is called once per
epoch as ``f(base_lr, epoch, epochs)``; one with ``per_step = True`` (:class:`LinearWarmup`,
:class:`WarmupCosine`, :class:`OneCycle`) once per step as ``f(base_lr, step, steps)``, the
0-based step of the run and the run's steps (``epochs`` times the batches of an epoch).
"""

import math
import numbers

from gpubp.data.validation import check_positive

class Schedule:
    """Learning rate of an epoch from the base rate: ``lr(epoch) = f(base_lr, epoch, epochs)``."""

    name = "constant"
    per_step = False  # True: called with (base_lr, step, steps) for every step

    def __call__(self, base_lr, epoch, epochs):
        """The learning rate of 0-based ``epoch`` out of ``epochs``.

        Parameters
        ----------
        base_lr : float
        epoch : int
            0-based epoch.
        epochs : int
            Length of the whole run (used by schedules that anneal to an end).
        """
        return base_lr

    def get_config(self):
        return {"name": self.name}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()


class Constant(Schedule):
    """The base learning rate throughout."""


class StepDecay(Schedule):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs: ``η γ^⌊epoch/step_size⌋``.

    Parameters
    ----------
    step_size : int
        Epochs between decays.
    gamma : float
        Factor in ``(0, 1]``.
    """

    name = "step"

    def __init__(self, step_size=10, gamma=0.1):
        self.step_size = int(check_positive(step_size, "step_size", numbers.Integral))
        gamma = check_positive(gamma, "gamma")
        if gamma > 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
        self.gamma = float(gamma)

    def __call__(self, base_lr, epoch, epochs):
        return base_lr * self.gamma ** (epoch // self.step_size)

    def get_config(self):
        return {"name": self.name, "step_size": self.step_size, "gamma": self.gamma}


class CosineDecay(Schedule):
    """Cosine annealing ``η_min + (η − η_min)(1 + cos(π t / T)) / 2`` over ``T`` epochs.

    Parameters
    ----------
    period : int or None
        ``T``; None anneals over the whole run (``epochs`` of ``fit``). After ``T`` epochs
        the rate stays at ``min_lr``.
    min_lr : float
        ``η_min``.
    """

    name = "cosine"

    def __init__(self, period=None, min_lr=0.0):
        if period is not None:
            period = int(check_positive(period, "period", numbers.Integral))
        self.period = period
        self.min_lr = float(check_positive(min_lr, "min_lr", allow_zero=True))

    def __call__(self, base_lr, epoch, epochs):
        T = self.period or epochs
        t = min(epoch, T)
        return self.min_lr + (base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t / T))

    def get_config(self):
        return {"name": self.name, "period": self.period, "min_lr": self.min_lr}


class InvScaling(Schedule):
    """Inverse scaling, scikit-learn's ``"invscaling"``: ``η / (t + 1)^power_t`` with ``t``
    the examples seen before the epoch, ``t = epoch · examples_per_epoch``.

    Parameters
    ----------
    power_t : float
        Exponent, >= 0.
    examples_per_epoch : int
        Examples in one epoch (1 makes ``t`` the epoch count).
    """

    name = "invscaling"

    def __init__(self, power_t=0.5, examples_per_epoch=1):
        self.power_t = float(check_positive(power_t, "power_t", allow_zero=True))
        self.examples_per_epoch = int(check_positive(examples_per_epoch, "examples_per_epoch",
                                                     numbers.Integral))

    def __call__(self, base_lr, epoch, epochs):
        return float(base_lr) / (epoch * self.examples_per_epoch + 1) ** self.power_t

    def get_config(self):
        return {"name": self.name, "power_t": self.power_t,
                "examples_per_epoch": self.examples_per_epoch}


def _check_factor(value, name):
    """``value`` in ``(0, 1]``, as a float."""
    value = check_positive(value, name)
    if value > 1:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return float(value)


class LinearWarmup(Schedule):
    """Linear warm-up over the first steps: PyTorch's ``LinearLR(optimizer, start_factor,
    end_factor=1, total_iters=warmup_steps)``, then the base rate.

    ``η_t = η (f + (1 − f) min(t, W) / W)`` at 0-based step ``t``, ``f`` the
    ``start_factor``, ``W`` the ``warmup_steps``.

    Parameters
    ----------
    warmup_steps : int
        ``W``, >= 1.
    start_factor : float
        ``f`` in ``(0, 1]``: the first step's share of the base rate (PyTorch's default 1/3).
    """

    name = "warmup"
    per_step = True

    def __init__(self, warmup_steps=100, start_factor=1.0 / 3):
        self.warmup_steps = int(check_positive(warmup_steps, "warmup_steps", numbers.Integral))
        self.start_factor = _check_factor(start_factor, "start_factor")

    def factor(self, step):
        """The share of the base rate at 0-based ``step``."""
        f = self.start_factor
        return f + (1.0 - f) * min(step, self.warmup_steps) / self.warmup_steps

    def __call__(self, base_lr, step, steps):
        return base_lr * self.factor(step)

    def get_config(self):
        return {"name": self.name, "warmup_steps": self.warmup_steps,
                "start_factor": self.start_factor}


class WarmupCosine(LinearWarmup):
    """Linear warm-up, then cosine annealing to ``min_lr`` at the run's end: PyTorch's
    ``SequentialLR([LinearLR(start_factor, total_iters=W), CosineAnnealingLR(T_max=T − W,
    eta_min=min_lr)], milestones=[W])``, ``T`` the run's steps.

    ``η_t`` is :class:`LinearWarmup`'s for ``t < W``, then
    ``η_min + (η − η_min)(1 + cos(π (t − W) / (T − W))) / 2``.

    Parameters
    ----------
    warmup_steps : int
    min_lr : float
    start_factor : float
    """

    name = "warmup_cosine"

    def __init__(self, warmup_steps=100, min_lr=0.0, start_factor=1.0 / 3):
        super().__init__(warmup_steps, start_factor)
        self.min_lr = float(check_positive(min_lr, "min_lr", allow_zero=True))

    def __call__(self, base_lr, step, steps):
        W = self.warmup_steps
        if step < W:
            return base_lr * self.factor(step)
        if steps <= W:
            raise ValueError(f"warmup_steps ({W}) must be fewer than the run's {steps} steps")
        t = min(step, steps) - W
        cosine = 1.0 + math.cos(math.pi * t / (steps - W))
        return self.min_lr + (base_lr - self.min_lr) * 0.5 * cosine

    def get_config(self):
        return {"name": self.name, "warmup_steps": self.warmup_steps, "min_lr": self.min_lr,
                "start_factor": self.start_factor}


class OneCycle(Schedule):
    """The one-cycle policy (Smith & Topin, 2019), PyTorch's ``OneCycleLR(optimizer,
    max_lr=lr, total_steps=T)`` with its defaults, the base rate as ``max_lr``.

    From ``η / div_factor`` up to ``η`` over the first ``pct_start`` of the steps, then
    down to ``η / (div_factor · final_div_factor)`` at the last step, by cosine (or linear)
    interpolation; ``three_phase`` comes back to the initial rate before the final
    descent, as PyTorch's. The momentum is not cycled (PyTorch's ``cycle_momentum=False``).

    Parameters
    ----------
    pct_start : float
        In ``(0, 1)``.
    anneal_strategy : {"cos", "linear"}
    div_factor, final_div_factor : float
        > 0.
    three_phase : bool
    """

    name = "one_cycle"
    per_step = True

    def __init__(self, pct_start=0.3, anneal_strategy="cos", div_factor=25.0,
                 final_div_factor=1e4, three_phase=False):
        pct_start = check_positive(pct_start, "pct_start")
        if pct_start >= 1:
            raise ValueError(f"pct_start must be in (0, 1), got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got "
                             f"{anneal_strategy!r}")
        self.pct_start, self.anneal_strategy = float(pct_start), anneal_strategy
        self.div_factor = float(check_positive(div_factor, "div_factor"))
        self.final_div_factor = float(check_positive(final_div_factor, "final_div_factor"))
        self.three_phase = bool(three_phase)

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def __call__(self, base_lr, step, steps):
        initial = base_lr / self.div_factor
        final = initial / self.final_div_factor
        up = float(self.pct_start * steps) - 1
        if self.three_phase:
            phases = ((up, initial, base_lr), (float(2 * self.pct_start * steps) - 2, base_lr, initial),
                      (steps - 1, initial, final))
        else:
            phases = ((up, initial, base_lr), (steps - 1, base_lr, final))
        start_step = 0.0
        for i, (end_step, start_lr, end_lr) in enumerate(phases):  # PyTorch's get_lr
            if step <= end_step or i == len(phases) - 1:
                pct = (step - start_step) / (end_step - start_step)
                return self._anneal(start_lr, end_lr, pct)
            start_step = end_step

    def get_config(self):
        return {"name": self.name, "pct_start": self.pct_start,
                "anneal_strategy": self.anneal_strategy, "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor, "three_phase": self.three_phase}


SCHEDULES = {"constant": Constant, "step": StepDecay, "cosine": CosineDecay,
             "invscaling": InvScaling, "warmup": LinearWarmup, "warmup_cosine": WarmupCosine,
             "one_cycle": OneCycle}


def get_schedule(schedule):
    """A :class:`Schedule` from None (constant), a name, a config dict or an instance."""
    if schedule is None:
        return Constant()
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, dict) and schedule.get("name") in SCHEDULES:
        config = dict(schedule)
        return SCHEDULES[config.pop("name")](**config)
    if isinstance(schedule, str) and schedule.lower() in SCHEDULES:
        return SCHEDULES[schedule.lower()]()
    raise ValueError(f"schedule must be one of {tuple(SCHEDULES)}, a Schedule instance or "
                     f"None, got {schedule!r}")
