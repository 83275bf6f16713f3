"""Retry policy: when a failed attempt may run again.

The policy is data in the spec and is applied by the pure graph, never by a
backend. Jitter is derived from a hash of the attempt's identity rather than from
a random number generator, so the graph stays a pure function: the same record
and the same failure always give the same delay.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

__all__ = ["BACKOFFS", "RetryPolicy"]

BACKOFFS = ("none", "fixed", "linear", "exponential")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait before attempt ``n + 1`` after attempt ``n`` failed.

    - ``backoff``: ``none`` (retry at once), ``fixed`` (``delay``), ``linear``
      (``delay * n``) or ``exponential`` (``delay * 2 ** (n - 1)``).
    - ``delay``: the base delay in seconds.
    - ``max_delay``: the cap, in seconds, applied before jitter.
    - ``jitter``: a fraction in ``[0, 1]``; the delay is reduced by up to that
      fraction, spreading retries of many steps that failed together.
    """

    backoff: str = "none"
    delay: float = 1.0
    max_delay: float = 300.0
    jitter: float = 0.0

    def delay_for(self, attempt: int, seed: str = "") -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if self.backoff == "none":
            base = 0.0
        elif self.backoff == "fixed":
            base = self.delay
        elif self.backoff == "linear":
            base = self.delay * attempt
        else:
            base = self.delay * 2.0 ** min(attempt - 1, 62)
        base = min(base, self.max_delay)
        if self.jitter and base:
            digest = hashlib.blake2b(f"{seed}#{attempt}".encode(), digest_size=8).digest()
            fraction = int.from_bytes(digest, "big") / 2**64
            base *= 1.0 - self.jitter * fraction
        return base

    def to_dict(self) -> dict[str, Any]:
        return {
            "backoff": self.backoff,
            "delay": self.delay,
            "max_delay": self.max_delay,
            "jitter": self.jitter,
        }
