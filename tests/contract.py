"""The contract suites, re-exported from ``runfox.testing`` where they now live.

Test modules here keep ``from contract import ...``; a backend outside runfox
imports the same classes from ``runfox.testing``.
"""

from runfox.testing import (
    BackendContract,
    CacheContract,
    RunnerContract,
    StoreContract,
    bump,
    chain_spec,
    fan_executor,
    fan_spec,
    job,
    new_record,
)

__all__ = [
    "BackendContract",
    "CacheContract",
    "RunnerContract",
    "StoreContract",
    "bump",
    "chain_spec",
    "fan_executor",
    "fan_spec",
    "job",
    "new_record",
]
