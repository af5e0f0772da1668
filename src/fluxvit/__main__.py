"""``python -m fluxvit`` (used by ``torchrun -m fluxvit train ...``)."""

from fluxvit.cli import main

raise SystemExit(main())
