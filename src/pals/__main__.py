"""`python -m pals` runs the CLI."""

from pals.cli import main

raise SystemExit(main())
