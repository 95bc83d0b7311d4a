"""``python -m stateward.cli``."""

from . import main

raise SystemExit(main())
