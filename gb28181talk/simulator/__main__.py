"""``python -m gb28181talk.simulator``: the same as ``gb28181talk-device``."""

from gb28181talk.simulator.cli import main

raise SystemExit(main())
