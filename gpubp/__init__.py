"""gpubp: fully connected networks trained by explicit backpropagation."""

__version__ = "0.1.0"
