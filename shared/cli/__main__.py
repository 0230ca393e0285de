"""`python -m shared.cli`: the `whospoke` command."""

from shared.cli.main import main

raise SystemExit(main())
