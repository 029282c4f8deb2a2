"""Optimizers over the flat parameter vector θ, learning-rate schedules and L-BFGS.

Modules:
    optimizers  Optimizer, SGD (momentum, Nesterov), Adam; get_optimizer by name
    schedules   Schedule, Constant, StepDecay, CosineDecay, InvScaling; get_schedule
    lbfgs       SciPy's L-BFGS-B over θ, cost and gradient from the backend
"""

from gpubp.optim.optimizers import SGD, Adam, Optimizer, get_optimizer
from gpubp.optim.schedules import (Constant, CosineDecay, InvScaling, Schedule, StepDecay,
                                   get_schedule)

__all__ = ["Optimizer", "SGD", "Adam", "get_optimizer", "Schedule", "Constant", "StepDecay",
           "CosineDecay", "InvScaling", "get_schedule"]
