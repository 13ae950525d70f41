"""The fault-injection suite: the pipeline's guarantees checked while things break.

- `load`: synthetic traffic, PII canaries and poison pills written with `acks=all`, with a
  ledger of what Kafka acknowledged;
- `faults`: worker processes to kill, stop, restart and scale, and the local broker to
  kill and restart;
- `readback` and `ledger`: every topic read back with `read_committed` and checked: each
  input offset in exactly one audit or DLQ record, no output twice, no leak, the
  revocation barrier;
- `canaries`: where seeded synthetic identifiers must never appear (worker logs,
  `/metrics`, DLQ details, audit, measurement and de-identified outputs);
- `scenarios`: the faults and their loads; `report`: the markdown and JSON report;
  `python -m tests.chaos` runs them.
"""
