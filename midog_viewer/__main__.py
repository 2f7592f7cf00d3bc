"""``python -m midog_viewer`` is the ``midog-viewer`` console script."""

from midog_viewer.cli import main

raise SystemExit(main())
