"""The compiled murmur2 is exactly Kafka's default partitioner."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.kafka.writer import KeyPartitioner, murmur2

# The Java client's own vectors (`UtilsTest.testMurmur2`), signed as Java returns them.
JAVA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize(("key", "java"), JAVA_VECTORS)
def test_murmur2_matches_the_java_client(key: bytes, java: int) -> None:
    assert murmur2(key) == java & 0xFFFFFFFF


@given(st.binary(max_size=300))
@settings(max_examples=2000)
def test_murmur2_matches_aiokafka_for_any_key(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key) & 0xFFFFFFFF


@given(st.binary(min_size=1, max_size=100), st.integers(min_value=1, max_value=1000))
def test_partition_is_the_default_partitioners(key: bytes, partitions: int) -> None:
    # aiokafka's DefaultPartitioner: (murmur2(key) & 0x7fffffff) % len(partitions)
    expected = (aiokafka_murmur2(key) & 0x7FFFFFFF) % partitions
    assert KeyPartitioner()(key) % partitions == expected
