"""``python -m peyvand``: the same as the ``peyvand`` command."""

from peyvand.cli.main import main

raise SystemExit(main())
