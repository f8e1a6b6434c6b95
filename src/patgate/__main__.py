"""``python -m patgate``: the same as the ``patgate`` command."""

from patgate.cli import main

raise SystemExit(main())
