"""``python -m amalfa.daemon ARGS``: the same as ``amalfa daemon ARGS``."""

from amalfa.daemon import main

raise SystemExit(main())
