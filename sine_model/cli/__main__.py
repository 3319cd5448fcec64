"""``python -m sine_model.cli``: the ``napari-sine`` command."""

from sine_model.cli.app import main

raise SystemExit(main())
