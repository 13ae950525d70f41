"""The contenders the pipeline is compared with, each runnable as its own process.

Each reads the raw topics under `--prefix` from the beginning with the consumer group
`--group`, writes under `--prefix` + its own name, and reports its progress on stdout as
`PROGRESS {"t": ..., "events": ..., "consent": ...}` lines (see `common.Progress`).
"""

from typing import Final

MODULES: Final = {
    "ceiling": "benchmarks.contenders.ceiling",
    "ceiling_fair": "benchmarks.contenders.ceiling_fair",
    "faust": "benchmarks.contenders.faust_agent",
    "faust_batched": "benchmarks.contenders.faust_batched",
    "quix": "benchmarks.contenders.quix_app",
}
"""Each contender's module, run as `python -m <module> --bootstrap ... --prefix ...`."""
