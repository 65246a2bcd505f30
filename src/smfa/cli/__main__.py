"""``python -m smfa.cli`` (what ``accelerate launch -m smfa.cli`` runs): the ``smfa`` command."""

import sys

from smfa.cli.main import main

sys.exit(main())
