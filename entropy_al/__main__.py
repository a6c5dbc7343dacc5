"""``python -m entropy_al``: see :func:`entropy_al.cli.main`."""

from .cli import main

raise SystemExit(main())
