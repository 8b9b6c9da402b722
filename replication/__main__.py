"""``python -m replication``: the same command line as ``replication``."""

import sys

from replication.cli import main

sys.exit(main())
