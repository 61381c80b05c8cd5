from amalfa.cli import main

raise SystemExit(main())
