"""``python -m quotaflow.chaos`` (``just chaos``)."""

import sys

from quotaflow.chaos.run import main

sys.exit(main())
