"""Pseudonymization and de-identification primitives.

- `Pseudonymizer.user_key`: keyed HMAC-SHA256 of the subject, tagged with a key id so
  keys can be rotated; without the key it cannot be reversed or recomputed.
- `truncate_ip`: IPv4 to its /24, IPv6 to its /48 (an IPv4-mapped IPv6 as IPv4).
- `user_agent_family`: browser and OS family from a fixed, small vocabulary.
- `url_origin`: scheme and host only; no port, path, query, fragment or credentials.
- `truncate_to_hour`: unix seconds down to the start of the hour.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable
from socket import AF_INET6, inet_ntop
from typing import Final

from pipeline.core.errors import PolicyConfigError
from schemas.normalize import ipv6_packed, is_ipv4

MIN_KEY_BYTES: Final = 16
HOUR: Final = 3600
OTHER: Final = "Other"
_IPV4_MAPPED: Final = bytes(10) + b"\xff\xff"
"""The first 12 bytes of an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)."""
_HOST_BITS_48: Final = bytes(10)

# First match wins, so a token shared with a later family comes first (Edge and Opera
# user agents also say Chrome and Safari; Chrome's also says Safari; iOS's says Mac OS X;
# Android's says Linux).
_BROWSERS: Final = (
    ("Edg", "Edge"),
    ("OPR/", "Opera"),
    ("Opera", "Opera"),
    ("SamsungBrowser", "Samsung Internet"),
    ("Firefox/", "Firefox"),
    ("FxiOS", "Firefox"),
    ("CriOS", "Chrome"),
    ("Chrome/", "Chrome"),
    ("Chromium", "Chrome"),
    ("Safari/", "Safari"),
    ("MSIE ", "Internet Explorer"),
    ("Trident/", "Internet Explorer"),
    ("bot", "Bot"),
    ("Bot", "Bot"),
    ("spider", "Bot"),
    ("crawl", "Bot"),
)
_OPERATING_SYSTEMS: Final = (
    ("iPhone", "iOS"),
    ("iPad", "iOS"),
    ("iPod", "iOS"),
    ("iOS", "iOS"),
    ("Android", "Android"),
    ("CrOS", "ChromeOS"),
    ("Windows", "Windows"),
    ("Macintosh", "macOS"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
)
# scheme, then an authority whose user info and port are skipped; an IPv6 literal
# ("[...]") never matches the host group
_ORIGIN: Final = re.compile(
    r"\s*(?P<scheme>[Hh][Tt][Tt][Pp][Ss]?)://(?:[^/?#@]*@)?(?P<host>[^/?#:@\[\]]+)(?::\d*)?(?:[/?#]|$)"
)
_HOSTNAME: Final = re.compile(r"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63}){0,126}\.?")


class Pseudonymizer:
    """Keyed HMAC-SHA256 of subject keys.

    The keyed HMAC state is prepared once and copied per subject, and recent results
    are memoized per instance (subjects repeat: one user, many events).
    """

    __slots__ = ("_mac", "key_id", "user_key")

    def __init__(self, key: bytes, key_id: str, *, cache_size: int = 65_536) -> None:
        """Prepare the HMAC for `key`, known to consumers as `key_id`.

        Raises:
            PolicyConfigError: the key is shorter than 16 bytes or the key id is empty.
        """
        if len(key) < MIN_KEY_BYTES:
            raise PolicyConfigError(
                f"the pseudonymization key must be at least {MIN_KEY_BYTES} bytes"
            )
        if not key_id:
            raise PolicyConfigError("the pseudonymization key id must not be empty")
        self.key_id: Final = key_id
        self._mac: Final = hmac.new(key, digestmod=hashlib.sha256)
        self.user_key: Final[Callable[[str], str]] = functools.lru_cache(maxsize=cache_size)(
            self._user_key
        )
        """Lowercase hex HMAC-SHA256 of a subject key under this key."""

    def _user_key(self, subject: str) -> str:
        mac = self._mac.copy()
        mac.update(subject.encode())
        return mac.hexdigest()

    def __repr__(self) -> str:
        return f"Pseudonymizer(key_id={self.key_id!r})"


def truncate_ip(address: str | None) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) network holding `address`, e.g. `203.0.113.0/24`."""
    if not address:
        return None
    if is_ipv4(address):
        return address.rpartition(".")[0] + ".0/24"
    packed = ipv6_packed(address)
    if packed is not None and packed[:12] != _IPV4_MAPPED:
        return inet_ntop(AF_INET6, packed[:6] + _HOST_BITS_48) + "/48"
    return network_by_ipaddress(address)


def network_by_ipaddress(address: str) -> str | None:
    """`truncate_ip` by the `ipaddress` module alone: any form it reads (dotted quads in
    IPv6, zones, IPv4-mapped addresses), at about 20 µs an address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return ipaddress.ip_network((ip, prefix), strict=False).compressed


@functools.lru_cache(maxsize=4096)
def user_agent_family(user_agent: str | None) -> tuple[str, str]:
    """`(browser family, OS family)`, each from a fixed list or `Other`.

    Few user agents make most traffic: the newest 4,096 are remembered (the families, a
    few hundred bytes each), so most events skip the token scan."""
    if not user_agent:
        return OTHER, OTHER
    return _first_family(user_agent, _BROWSERS), _first_family(user_agent, _OPERATING_SYSTEMS)


def url_origin(url: str | None) -> str | None:
    """`scheme://host` of an http(s) URL, lowercased; None for anything else.

    A host that is an IP address is dropped too: it would be an identifier.
    """
    match = _ORIGIN.match(url) if url else None
    if match is None:
        return None
    host = match["host"].lower()
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    if _HOSTNAME.fullmatch(host) is None or host.rstrip(".").rpartition(".")[2].isdigit():
        return None
    return f"{match['scheme'].lower()}://{host.rstrip('.')}"


def truncate_to_hour(unix_seconds: int) -> int:
    """The start of the hour holding `unix_seconds`."""
    return unix_seconds - unix_seconds % HOUR


def _first_family(user_agent: str, families: tuple[tuple[str, str], ...]) -> str:
    for token, family in families:
        if token in user_agent:
            return family
    return OTHER
