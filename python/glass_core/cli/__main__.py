"""``python -m glass_core.cli``: the ``glass-core`` command."""

from glass_core.cli import main

raise SystemExit(main())
