"""The benchmark: the pipeline against a raw aiokafka loop, Faust and Quix Streams.

`python -m benchmarks.run` pre-produces one input, runs every contender on it as its own
process and writes the report to `benchmarks/results/`; `benchmarks/README.md` describes
the method.
"""
