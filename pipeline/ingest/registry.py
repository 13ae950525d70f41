"""The advertiser registry: who may send events, for which ids, with which tokens.

One YAML file (`PIPELINE_ADVERTISERS_FILE`) lists each advertiser with its Pinterest ad
accounts, Meta pixels, Pinterest tags and audiences, and the SHA-256 of each of its
tokens, never a token::

    version: 1
    advertisers:
      shop-1:
        ad_accounts: ['549755885175']
        pixels: ['1234567890']
        tags: ['2612345678901']
        audiences: []
        tokens:
        - {id: tk_5f0c3a9e21d4, sha256: 9f86d0..., trusted: false, created_at: 1764600000}

A token is shown once, when `consent-pipeline advertisers add` makes it; the file keeps
its digest. Every id belongs to one advertiser at most. A `trusted` token may name a
`user_id` on native events (internal producers holding a trusted token).
Presented tokens are checked against every stored digest in constant time.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Final, Literal, TypeAlias

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationError,
)

from pipeline.ingest.errors import RegistryError

IdKind: TypeAlias = Literal["ad_account", "pixel", "tag", "audience"]
ID_KINDS: Final[tuple[IdKind, ...]] = ("ad_account", "pixel", "tag", "audience")

TOKEN_PREFIX: Final = "cpt_"
MAX_TOKEN_LENGTH: Final = 512

AdvertiserId = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$", strict=True)
]
PlatformId = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,20}$", strict=True)]
"""Pinterest ad account, tag and list ids and Meta pixel and audience ids are numeric."""

_HEADER: Final = (
    "# consent-pipeline advertiser registry: ids and token digests, never a token.\n"
    "# Edit it with `consent-pipeline advertisers add|list|revoke`.\n"
)
_FIELDS: Final[Mapping[IdKind, str]] = MappingProxyType(
    {"ad_account": "ad_accounts", "pixel": "pixels", "tag": "tags", "audience": "audiences"}
)
_FILE_CONFIG: Final = ConfigDict(extra="forbid", frozen=True)


class TokenEntry(BaseModel):
    """One token of an advertiser, by its digest."""

    model_config = _FILE_CONFIG

    id: Annotated[str, StringConstraints(pattern=r"^tk_[0-9a-f]{12}$", strict=True)]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$", strict=True)]
    trusted: StrictBool = False
    created_at: StrictInt = Field(ge=0)


class AdvertiserEntry(BaseModel):
    """One advertiser's ids and tokens."""

    model_config = _FILE_CONFIG

    ad_accounts: tuple[PlatformId, ...] = ()
    pixels: tuple[PlatformId, ...] = ()
    tags: tuple[PlatformId, ...] = ()
    audiences: tuple[PlatformId, ...] = ()
    tokens: tuple[TokenEntry, ...] = ()

    def ids(self, kind: IdKind) -> tuple[str, ...]:
        """This advertiser's ids of one kind."""
        ids: tuple[str, ...] = getattr(self, _FIELDS[kind])
        return ids


class RegistryFile(BaseModel):
    """The registry file as stored."""

    model_config = _FILE_CONFIG

    version: Literal[1] = 1
    advertisers: dict[AdvertiserId, AdvertiserEntry] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Credential:
    """Who a presented token belongs to."""

    advertiser_id: str
    token_id: str
    trusted: bool


def token_sha256(token: str) -> str:
    """The hex SHA-256 the registry keeps for a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class Registry:
    """The advertisers and their ids and token digests, indexed for the collector."""

    def __init__(self, advertisers: Mapping[str, AdvertiserEntry] | None = None) -> None:
        self._file = RegistryFile(advertisers=dict(advertisers or {}))
        self._owners: dict[tuple[IdKind, str], str] = {}
        self._tokens: list[tuple[bytes, Credential]] = []
        token_ids: set[str] = set()
        for advertiser_id, entry in self._file.advertisers.items():
            for kind in ID_KINDS:
                for platform_id in entry.ids(kind):
                    owner = self._owners.setdefault((kind, platform_id), advertiser_id)
                    if owner != advertiser_id:
                        raise RegistryError(
                            f"{kind} {platform_id} is registered to both {owner} and "
                            f"{advertiser_id}"
                        )
            for token in entry.tokens:
                if token.id in token_ids:
                    raise RegistryError(f"token id {token.id} appears twice")
                token_ids.add(token.id)
                credential = Credential(advertiser_id, token.id, token.trusted)
                self._tokens.append((token.sha256.encode(), credential))

    @property
    def advertisers(self) -> Mapping[str, AdvertiserEntry]:
        """Every advertiser by id."""
        return MappingProxyType(self._file.advertisers)

    @property
    def has_trusted_tokens(self) -> bool:
        """Whether any token may name a user_id (the collector then needs a trust key)."""
        return any(credential.trusted for _, credential in self._tokens)

    def authenticate(self, token: str | None) -> Credential | None:
        """The credential of `token`, or None; every stored digest is compared, in constant time."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        digest = token_sha256(token).encode()
        found: Credential | None = None
        for stored, credential in self._tokens:
            if hmac.compare_digest(digest, stored):
                found = credential
        return found

    def owner(self, kind: IdKind, platform_id: str) -> str | None:
        """The advertiser an ad account, pixel, tag or audience id is registered to."""
        return self._owners.get((kind, platform_id))

    def with_new_token(
        self,
        advertiser_id: str,
        token: str,
        *,
        ids: Mapping[IdKind, Iterable[str]] | None = None,
        trusted: bool = False,
        now: int,
    ) -> tuple[Registry, str]:
        """A registry with `advertiser_id` added or extended by `ids` and a new token.

        Returns the new registry and the new token's id.

        Raises:
            RegistryError: an id is malformed or registered to another advertiser.
        """
        current = self._file.advertisers.get(advertiser_id, AdvertiserEntry())
        fields: dict[str, object] = {}
        for kind in ID_KINDS:
            added = [i for i in (ids or {}).get(kind, ()) if i not in current.ids(kind)]
            fields[_FIELDS[kind]] = (*current.ids(kind), *dict.fromkeys(added))
        token_id = "tk_" + secrets.token_hex(6)
        entry = TokenEntry(id=token_id, sha256=token_sha256(token), trusted=trusted, created_at=now)
        fields["tokens"] = (*current.tokens, entry)
        try:
            updated = AdvertiserEntry.model_validate(fields)
            RegistryFile(advertisers={advertiser_id: updated})
        except ValidationError as exc:
            raise RegistryError(_describe(exc)) from None
        return Registry({**self._file.advertisers, advertiser_id: updated}), token_id

    def without_tokens(self, advertiser_id: str, token_id: str | None = None) -> Registry:
        """A registry where the advertiser's tokens (or only `token_id`) are revoked.

        Raises:
            RegistryError: no such advertiser, or no such token of it.
        """
        entry = self._file.advertisers.get(advertiser_id)
        if entry is None:
            raise RegistryError(f"no advertiser {advertiser_id} in the registry")
        kept = tuple(t for t in entry.tokens if token_id is not None and t.id != token_id)
        if token_id is not None and len(kept) == len(entry.tokens):
            raise RegistryError(f"advertiser {advertiser_id} has no token {token_id}")
        updated = entry.model_copy(update={"tokens": kept})
        return Registry({**self._file.advertisers, advertiser_id: updated})

    def to_yaml(self) -> str:
        """The registry file's text."""
        document = self._file.model_dump(mode="json")
        text = yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=200)
        return _HEADER + text


def load_registry(path: Path) -> Registry:
    """Read and check a registry file.

    Raises:
        RegistryError: the file cannot be read or is not a valid registry (the message
            names the file and the problem, never a digest).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"cannot read the advertiser registry {path}: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        raise RegistryError(f"the advertiser registry {path} is not valid YAML") from None
    try:
        parsed = RegistryFile.model_validate(document if document is not None else {})
    except ValidationError as exc:
        problem = _describe(exc)
        raise RegistryError(f"the advertiser registry {path} is invalid: {problem}") from None
    try:
        return Registry(parsed.advertisers)
    except RegistryError as exc:
        raise RegistryError(f"the advertiser registry {path} is invalid: {exc}") from None


def save_registry(path: Path, registry: Registry) -> None:
    """Write the registry atomically (a reader sees the old file or the new one).

    Raises:
        RegistryError: the file cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(registry.to_yaml())
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(temporary)
        problem = exc.strerror
        raise RegistryError(f"cannot write the advertiser registry {path}: {problem}") from None


def registry_stamp(path: Path) -> tuple[int, int] | None:
    """What changes when the file is replaced or edited: its mtime and size (None: absent)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def describe(registry: Registry) -> Iterator[str]:
    """One line per advertiser: its ids and its token ids, never a digest."""
    for advertiser_id, entry in sorted(registry.advertisers.items()):
        parts = [advertiser_id]
        for kind in ID_KINDS:
            ids = entry.ids(kind)
            if ids:
                parts.append(f"{_FIELDS[kind]}={','.join(ids)}")
        tokens = [f"{t.id}{' (trusted)' if t.trusted else ''}" for t in entry.tokens]
        parts.append(f"tokens={','.join(tokens) if tokens else '-'}")
        yield "  ".join(parts)


def _describe(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'file'}: {error['msg']}"
        for error in errors[:3]
    )
