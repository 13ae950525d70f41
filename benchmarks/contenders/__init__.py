"""The contenders the pipeline is compared with, each runnable as its own process.

Each reads the raw topics under `--prefix` from the beginning with the consumer group
`--group`, writes under `--prefix` + its own name, and reports its progress on stdout as
`PROGRESS {"t": ..., "events": ..., "consent": ...}` lines (see `common.Progress`).
"""
