"""Process settings the benchmark needs before torch loads; ``musicgen.experiments.speed`` imports this module
first, so importing any part of the package applies them.

``OMP_WAIT_POLICY`` defaults to PASSIVE (OpenMP reads it once, when torch loads it; an explicit
setting wins): with OpenMP's default spinning, on a 2-core machine shared with other processes
every parallel region waits for a descheduled sibling thread, and decoding went from 15 ms to
250 ms per token. Where torch is already loaded (an interactive session, the test suite) setting
it would have no effect, and it is left alone.
"""

from __future__ import annotations

import os
import sys

if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: The policy OpenMP got (None: its default, spinning).
OMP_WAIT_POLICY: str | None = os.environ.get("OMP_WAIT_POLICY")
