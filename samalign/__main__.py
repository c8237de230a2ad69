"""``python -m samalign`` runs the command line."""

from samalign.cli import main

raise SystemExit(main())
