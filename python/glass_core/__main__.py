"""``python -m glass_core``: same as the ``glass-core`` command."""

from glass_core.cli import main

raise SystemExit(main())
