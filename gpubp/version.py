"""The package version, apart so that any module can name it without importing gpubp whole."""

__version__ = "0.1.0"
