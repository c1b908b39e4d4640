"""``python -m avalanche_mind.cli``: the ``avalanche-mind`` command without its console script."""
import sys

from avalanche_mind.cli import main

sys.exit(main())
