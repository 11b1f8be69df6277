"""`python -m skewless.cli`: the `skewless` command."""

import sys

from skewless.cli import main

sys.exit(main())
