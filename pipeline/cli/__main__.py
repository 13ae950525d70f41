"""`python -m pipeline.cli`: the `consent-pipeline` command."""

import sys

from pipeline.cli import main

sys.exit(main())
