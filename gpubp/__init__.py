"""gpubp: fully connected networks trained by explicit backpropagation.

>>> import gpubp
>>> net = gpubp.Network([64, 32, 10], hidden="sigmoid", output="softmax", seed=0)
>>> history = net.fit(X, y, epochs=10, batch_size=32, lr=0.1)  # doctest: +SKIP

``device="cuda"`` trains on an NVIDIA GPU through CuPy and Numba CUDA kernels and falls
back to the CPU, with a warning, where no GPU is usable.

The package by concern, each importing only from those below it (``docs/design.md``):
``cli``, ``bench``, ``sklearn`` / ``training`` / ``distributed`` / ``io`` / ``core``,
``optim`` / ``backends`` / ``kernels``, ``data``, ``datasets`` / ``activations``,
``losses``, ``errors``.
"""

from gpubp import distributed  # noqa: F401 - gpubp.distributed.is_root() after import gpubp
from gpubp.core.gradcheck import gradcheck
from gpubp.core.network import Network
from gpubp.errors import TrainingDiverged
from gpubp.io.model import load
from gpubp.io.torch_weights import from_torch
from gpubp.optim import (SGD, Adam, AdamW, CosineDecay, LinearWarmup, OneCycle, Optimizer, RMSprop,
                         StepDecay, WarmupCosine)
from gpubp.training.callbacks import Callback, EarlyStopping, LambdaCallback, ReduceLROnPlateau
from gpubp.training.history import History
from gpubp.training.loggers import CSVLogger, TensorBoard
from gpubp.training.mlflow_logger import MLflowLogger
from gpubp.training.privacy import DPSGD
from gpubp.version import __version__

__all__ = ["Network", "History", "TrainingDiverged", "gradcheck", "load", "SGD", "Adam",
           "AdamW", "RMSprop", "Optimizer", "StepDecay", "CosineDecay", "LinearWarmup",
           "WarmupCosine", "OneCycle", "Callback", "EarlyStopping", "LambdaCallback",
           "ReduceLROnPlateau", "CSVLogger", "TensorBoard", "MLflowLogger", "from_torch",
           "DPSGD", "__version__"]
