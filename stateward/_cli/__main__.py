"""``python -m stateward._cli``."""

from . import main

raise SystemExit(main())
