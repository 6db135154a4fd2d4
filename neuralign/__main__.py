"""``python -m neuralign`` is the ``neuralign`` command."""

import sys

from neuralign.cli import main

sys.exit(main())
