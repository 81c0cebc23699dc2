"""How long to wait before trying again: one rule for every retry loop (HTTP fetches, SMTP).

Exponential, from `base` seconds doubling with each try, jittered between 0.5 and 1 of that so
that many clients failing together do not come back together (AWS's "equal jitter").
"""

from __future__ import annotations

import random


def backoff_delay(base: float, attempt: int) -> float:
    """Seconds to wait before try `attempt + 1` (attempt 0: the first retry)."""
    return base * 2**attempt * (0.5 + random.random() / 2)
