"""Run the CLI as ``python -m prunefit``."""

import sys

from prunefit.cli import main

sys.exit(main())
