"""The ``neuralign`` command line: the only place that prints for the user.

``parser`` builds the parser and turns user errors into one line; one module per group of
commands (``offline``, ``online``, ``demo``) is a thin layer over the library, and ``common``
holds what they share. ``neuralign bench`` is :mod:`neuralign.bench`, one module per measurement.
"""

from neuralign.cli.parser import main

__all__ = ["main"]
