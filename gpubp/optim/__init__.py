"""Optimizers over the flat parameter vector θ, learning-rate schedules and L-BFGS.

Modules:
    base        Optimizer: rate per epoch or step, decay, clipping, flat state
    optimizers  SGD (momentum, Nesterov), Adam, AdamW, RMSprop; get_optimizer by name
    schedules   Schedule, Constant, StepDecay, CosineDecay, InvScaling (per epoch),
                LinearWarmup, WarmupCosine, OneCycle (per step); get_schedule
    lbfgs       SciPy's L-BFGS-B over θ, cost and gradient from the backend
"""

from gpubp.optim.optimizers import SGD, Adam, AdamW, Optimizer, RMSprop, get_optimizer
from gpubp.optim.schedules import (Constant, CosineDecay, InvScaling, LinearWarmup, OneCycle,
                                   Schedule, StepDecay, WarmupCosine, get_schedule)

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "get_optimizer", "Schedule",
           "Constant", "StepDecay", "CosineDecay", "InvScaling", "LinearWarmup",
           "WarmupCosine", "OneCycle", "get_schedule"]
