"""The C library's IPv6 parser gives what `ipaddress` gives, for every input.

`canonical_ip` (at intake) and `truncate_ip` (in every de-identified record) read IPv6
text with `inet_pton` / `inet_ntop` and leave the rest to `ipaddress`; the references
below are those functions with `ipaddress` alone (`network_by_ipaddress` is the path
`truncate_ip` falls back to).
"""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.deidentify import network_by_ipaddress, truncate_ip
from schemas import normalize


def canonical_ip_reference(value: str) -> str | None:
    if normalize.is_ipv4(value):
        return value
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        return None


def truncate_ip_reference(value: str) -> str | None:
    if not value:
        return None
    if normalize.is_ipv4(value):
        return value.rpartition(".")[0] + ".0/24"
    return network_by_ipaddress(value)


def _written(number: int, style: int, groups_kept: int) -> str:
    address = ipaddress.IPv6Address(number)
    if style == 0:
        return address.compressed
    if style == 1:
        return address.exploded.upper()
    if style == 2:  # leading zeros dropped from each group, no "::"
        return ":".join(group.lstrip("0") or "0" for group in address.exploded.split(":"))
    if style == 3:  # a "::" standing for the last groups, whatever they hold
        return ":".join(address.exploded.split(":")[:groups_kept]) + "::"
    if style == 4 and address.ipv4_mapped is None:  # the last 32 bits as a dotted quad
        return f"::ffff:{ipaddress.IPv4Address(number & 0xFFFFFFFF)}"
    return f"{address.compressed}%eth{groups_kept}"


_NUMBERS = st.one_of(
    st.integers(0, 2**128 - 1),
    st.integers(0, 2**48 - 1),  # mostly zero groups: "::" forms, IPv4-compatible text
    st.integers(0, 2**32 - 1).map(lambda low: 0xFFFF << 32 | low),  # IPv4-mapped
    st.integers(0, 2**16 - 1).map(lambda word: word << 112),
    st.sampled_from([0, 1, 2**128 - 1]),
)
ADDRESSES = st.one_of(
    st.builds(_written, _NUMBERS, st.integers(0, 5), st.integers(1, 7)),
    st.text(alphabet="0123456789abcdefABCDEFg:.% \x00", max_size=45),
    st.text(max_size=12),
)


@settings(max_examples=3000, deadline=None)
@given(ADDRESSES)
def test_canonical_ip_matches_ipaddress(value: str) -> None:
    expected = canonical_ip_reference(value)
    try:
        assert normalize.canonical_ip(value) == expected
    except ValueError:
        assert expected is None


@settings(max_examples=3000, deadline=None)
@given(ADDRESSES)
def test_truncate_ip_matches_ipaddress(value: str) -> None:
    assert truncate_ip(value) == truncate_ip_reference(value)


def test_ipv6_packed_leaves_dotted_quads_and_zones_to_ipaddress() -> None:
    assert normalize.ipv6_packed("2001:db8::1") == ipaddress.IPv6Address("2001:db8::1").packed
    assert normalize.ipv6_packed("::ffff:198.51.100.7") is None
    assert normalize.ipv6_packed("fe80::1%eth0") is None
    assert normalize.ipv6_packed("not an address") is None
