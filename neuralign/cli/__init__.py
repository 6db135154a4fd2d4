"""The ``neuralign`` command line: the only place that prints for the user.

``parser`` builds the parser and turns user errors into one line; one module per group of
commands (``offline``, ``online``, ``demo``, ``bench``) is a thin layer over the library.
"""

from neuralign.cli.parser import main

__all__ = ["main"]
