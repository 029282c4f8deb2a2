"""The ``gpubp`` command line: train, evaluate, predict, export, gradcheck, bench, info.

Modules:
    commands    the parser and one function per command
    files       data and model files as the commands read and write them
"""

from gpubp.cli.commands import main

__all__ = ["main"]
