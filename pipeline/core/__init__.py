"""The pure core: parsing, consent state, policy, de-identification, routing, aggregation.

Nothing here does I/O or imports faust, aiokafka or prometheus_client; the streaming
layer reads, calls these functions and writes what they return.
"""
