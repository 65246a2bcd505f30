"""``python -m smfa``: the ``smfa`` command."""

import sys

from smfa.cli.main import main

sys.exit(main())
