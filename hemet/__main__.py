"""``python -m hemet`` is the ``hemet`` command."""
import sys

from .cli import main

sys.exit(main())
