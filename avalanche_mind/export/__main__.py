"""``python -m avalanche_mind.export``: the ``avalanche-mind export`` command on its own."""
import sys

from avalanche_mind.cli.export import main

sys.exit(main())
