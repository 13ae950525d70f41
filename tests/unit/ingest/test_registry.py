"""The advertiser registry: ids per advertiser, token digests only, constant-time checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.ingest.errors import RegistryError
from pipeline.ingest.registry import (
    Credential,
    Registry,
    describe,
    load_registry,
    new_token,
    save_registry,
    token_sha256,
)

NOW = 1_700_000_000


def registry_with(token: str, *, trusted: bool = False) -> tuple[Registry, str]:
    return Registry().with_new_token(
        "shop-1",
        token,
        ids={"ad_account": ["549755885175"], "pixel": ["1234567890"], "tag": ["2612345678901"]},
        trusted=trusted,
        now=NOW,
    )


def test_a_token_authenticates_as_its_advertiser_and_nothing_else_does() -> None:
    token = new_token()
    registry, token_id = registry_with(token)

    assert registry.authenticate(token) == Credential("shop-1", token_id, trusted=False)
    assert registry.authenticate(token + "x") is None
    assert registry.authenticate(token[:-1]) is None
    assert registry.authenticate("") is None
    assert registry.authenticate(None) is None
    assert registry.authenticate("x" * 10_000) is None


def test_the_registry_keeps_digests_never_tokens(tmp_path: Path) -> None:
    token = new_token()
    registry, _ = registry_with(token, trusted=True)
    path = tmp_path / "advertisers.yaml"

    save_registry(path, registry)

    text = path.read_text()
    assert token not in text
    assert token_sha256(token) in text
    reloaded = load_registry(path)
    credential = reloaded.authenticate(token)
    assert credential is not None
    assert credential.trusted
    assert reloaded.has_trusted_tokens
    assert reloaded.owner("pixel", "1234567890") == "shop-1"
    assert reloaded.owner("ad_account", "549755885175") == "shop-1"
    assert reloaded.owner("tag", "2612345678901") == "shop-1"
    assert reloaded.owner("pixel", "999") is None


def test_extending_an_advertiser_adds_ids_and_a_token_and_keeps_the_old_ones() -> None:
    first, second = new_token(), new_token()
    registry, _ = registry_with(first)

    extended, _ = registry.with_new_token("shop-1", second, ids={"pixel": ["42"]}, now=NOW)

    entry = extended.advertisers["shop-1"]
    assert entry.pixels == ("1234567890", "42")
    assert extended.authenticate(first) is not None
    assert extended.authenticate(second) is not None


def test_an_id_belongs_to_one_advertiser() -> None:
    registry, _ = registry_with(new_token())

    with pytest.raises(RegistryError, match="registered to both shop-1 and shop-2"):
        registry.with_new_token("shop-2", new_token(), ids={"pixel": ["1234567890"]}, now=NOW)


@pytest.mark.parametrize(
    ("advertiser_id", "ids"),
    [("bad id", {}), ("shop-1", {"pixel": ["not-a-number"]}), ("shop-1", {"tag": ["1" * 21]})],
)
def test_malformed_ids_are_refused(advertiser_id: str, ids: dict[str, list[str]]) -> None:
    with pytest.raises(RegistryError):
        Registry().with_new_token(advertiser_id, new_token(), ids=ids, now=NOW)  # type: ignore[arg-type]


def test_revoking_one_token_or_all_of_them() -> None:
    first, second = new_token(), new_token()
    registry, first_id = registry_with(first)
    registry, _ = registry.with_new_token("shop-1", second, now=NOW)

    one = registry.without_tokens("shop-1", first_id)
    assert one.authenticate(first) is None
    assert one.authenticate(second) is not None

    none = registry.without_tokens("shop-1")
    assert none.authenticate(second) is None
    assert none.owner("pixel", "1234567890") == "shop-1", "revoking keeps the ids"
    with pytest.raises(RegistryError):
        registry.without_tokens("nobody")
    with pytest.raises(RegistryError):
        registry.without_tokens("shop-1", "tk_000000000000")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("advertisers: [", "not valid YAML"),
        ("version: 2\n", "version"),
        ("advertisers:\n  shop:\n    pixels: [12]\n", "pixels.0"),
        ("advertisers:\n  shop:\n    colour: blue\n", "colour"),
        (
            "advertisers:\n  a:\n    pixels: ['1']\n  b:\n    pixels: ['1']\n",
            "registered to both",
        ),
        (
            "advertisers:\n  a:\n    tokens: [{id: tk_000000000000, sha256: abc, created_at: 1}]\n",
            "sha256",
        ),
    ],
)
def test_an_invalid_file_names_the_file_and_the_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "advertisers.yaml"
    path.write_text(text)

    with pytest.raises(RegistryError, match=problem) as raised:
        load_registry(path)
    assert str(path) in str(raised.value)


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry(tmp_path / "absent.yaml")


def test_an_empty_file_is_an_empty_registry(tmp_path: Path) -> None:
    path = tmp_path / "advertisers.yaml"
    path.write_text("")

    assert dict(load_registry(path).advertisers) == {}


def test_listing_shows_ids_and_token_ids_never_digests() -> None:
    token = new_token()
    registry, token_id = registry_with(token, trusted=True)

    [line] = list(describe(registry))

    assert line.startswith("shop-1")
    assert "pixels=1234567890" in line
    assert f"{token_id} (trusted)" in line
    assert token_sha256(token) not in line


def test_the_add_command_prints_only_the_token_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "reg" / "advertisers.yaml"

    code = main(["advertisers", "add", "shop-1", "--pixel", "1234567890", "--file", str(path)])

    out, err = capsys.readouterr()
    assert code == 0
    token = out.strip()
    assert out == token + "\n"
    assert token.startswith("cpt_")
    assert token not in err
    assert load_registry(path).authenticate(token) is not None

    assert main(["advertisers", "list", "--file", str(path)]) == 0
    listed, _ = capsys.readouterr()
    assert "shop-1" in listed
    assert token not in listed

    assert main(["advertisers", "revoke", "shop-1", "--file", str(path)]) == 0
    assert load_registry(path).authenticate(token) is None


def test_the_add_command_refuses_a_conflicting_id_without_changing_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "advertisers.yaml"
    assert main(["advertisers", "add", "shop-1", "--pixel", "1", "--file", str(path)]) == 0
    before = path.read_text()
    capsys.readouterr()

    code = main(["advertisers", "add", "shop-2", "--pixel", "1", "--file", str(path)])

    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert "registered to both" in err
    assert path.read_text() == before
