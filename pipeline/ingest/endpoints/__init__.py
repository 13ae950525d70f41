"""The collector's HTTP endpoints, one module per dialect family.

Each module's `register(router, collector)` adds its routes. A handler reads the request,
authenticates it, calls its dialect's pure mapping (`pipeline.ingest.dialects`), has the
collector validate and deliver the records, and answers in the dialect's own shape.
"""
