"""``python -m gismo_demo`` (``make demo``): the control plane, then the data plane (see :mod:`.demo`)."""

from __future__ import annotations

import sys

from gismo_demo.demo import main

if __name__ == "__main__":
    sys.exit(main())
