"""gpubp: fully connected networks trained by explicit backpropagation.

>>> import gpubp
>>> net = gpubp.Network([64, 32, 10], hidden="sigmoid", output="softmax", seed=0)
>>> history = net.fit(X, y, epochs=10, batch_size=32, lr=0.1)  # doctest: +SKIP

``device="cuda"`` trains on an NVIDIA GPU through CuPy and Numba CUDA kernels and falls
back to the CPU, with a warning, where no GPU is usable.
"""

from gpubp.callbacks import Callback, EarlyStopping, LambdaCallback
from gpubp.gradcheck import gradcheck
from gpubp.history import History
from gpubp.io import load
from gpubp.network import Network
from gpubp.optimizers import SGD, Adam, CosineDecay, Optimizer, StepDecay
from gpubp.training import TrainingDiverged

__version__ = "0.1.0"
__all__ = ["Network", "History", "TrainingDiverged", "gradcheck", "load", "SGD", "Adam",
           "Optimizer", "StepDecay", "CosineDecay", "Callback", "EarlyStopping",
           "LambdaCallback", "__version__"]
