"""The fit loop and what hangs on it: callbacks, history, checkpoints, plots.

Modules:
    loop        fit: epochs, validation, stopping, progress, divergence
    callbacks   Callback, LambdaCallback, EarlyStopping, ReduceLROnPlateau
    batches     per-batch callbacks, and the compiled epoch in chunks between them
    loggers     CSVLogger, TensorBoard
    mlflow_logger  MLflowLogger
    history     History: the per-epoch figures
    checkpoint  resumable checkpoints (parameters, optimizer state, RNG, history)
    plotting    learning curves and gradient-flow figures (matplotlib)
"""

from gpubp.errors import TrainingDiverged
from gpubp.training.loop import fit

__all__ = ["fit", "TrainingDiverged"]
