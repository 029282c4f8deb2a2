"""Learning-rate schedules: the rate of each epoch from the base rate (``Network.fit(schedule=...)``)."""

import math
import numbers

from gpubp.data.validation import check_positive

class Schedule:
    """Learning rate of an epoch from the base rate: ``lr(epoch) = f(base_lr, epoch, epochs)``."""

    name = "constant"

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


SCHEDULES = {"constant": Constant, "step": StepDecay, "cosine": CosineDecay,
             "invscaling": InvScaling}


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
