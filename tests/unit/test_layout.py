"""The architecture, checked: a pure core, schemas below it, one codec, one topic catalogue."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import setuptools

ROOT = Path(__file__).resolve().parents[2]
PURE_FILES = sorted(
    [*(ROOT / "schemas").rglob("*.py"), *(ROOT / "pipeline" / "core").rglob("*.py")]
)
PROJECT_FILES = sorted(
    path
    for folder in ("pipeline", "schemas", "benchmarks", "tests")
    for path in (ROOT / folder).rglob("*.py")
)
BANNED = ("faust", "mode", "aiokafka", "kafka", "prometheus_client", "rocksdict", "aiohttp")
TOPIC_NAME = re.compile(
    r"raw\.(tag|sdk|widget|audience)\b|consent\.changes|identity\.links|activity\.[a-z_]+"
    r"|aggregates\.deidentified|decisions\.audit|-changelog\b|^raw\.$|\braw\.\{"
)
CATALOGUE = ROOT / "pipeline" / "catalogue.py"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_pure_files_are_found() -> None:
    assert len(PURE_FILES) >= 15


@pytest.mark.parametrize("path", PURE_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_core_and_schemas_import_no_streaming_metrics_or_web_library(path: Path) -> None:
    top_levels = {name.split(".")[0] for name in imported_modules(path)}

    assert not top_levels & set(BANNED)


@pytest.mark.parametrize("path", PURE_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_core_and_schemas_import_nothing_above_them(path: Path) -> None:
    allowed = (
        ("schemas",) if path.is_relative_to(ROOT / "schemas") else ("schemas", "pipeline.core")
    )
    project = {
        name for name in imported_modules(path) if name.split(".")[0] in ("pipeline", "schemas")
    }

    above = {name for name in project if not name.startswith(allowed) and name != "pipeline"}
    assert not above
    assert "pipeline" not in project or path.is_relative_to(ROOT / "pipeline" / "core")


def test_importing_the_core_loads_no_streaming_metrics_or_web_library() -> None:
    modules = [module_name(path) for path in PURE_FILES]
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {BANNED!r}))\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"


def test_only_the_codec_imports_orjson() -> None:
    importers = {
        str(path.relative_to(ROOT))
        for path in [*(ROOT / "schemas").rglob("*.py"), *(ROOT / "pipeline").rglob("*.py")]
        if any(name.split(".")[0] == "orjson" for name in imported_modules(path))
    }

    assert importers == {"schemas/codec.py"}


def test_the_fault_suite_is_not_in_the_product_package() -> None:
    assert not (ROOT / "pipeline" / "chaos").exists()
    assert (ROOT / "tests" / "chaos" / "__main__.py").is_file()


def _code_strings(path: Path) -> Iterator[tuple[int, str]]:
    """String constants of a module, docstrings and other bare string statements left out."""
    tree = ast.parse(path.read_text(), filename=str(path))
    bare = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in bare:
            yield node.lineno, node.value


def test_topic_names_are_written_in_the_catalogue_only() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in PROJECT_FILES
        if path not in (CATALOGUE, Path(__file__).resolve())
        for line, text in _code_strings(path)
        if TOPIC_NAME.search(text)
    ]

    assert found == []


def test_the_installed_package_holds_the_product_only() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]

    packages = setuptools.find_packages(str(ROOT), include=include)

    assert {name.split(".")[0] for name in packages} == {"pipeline", "schemas"}
    assert not [name for name in packages if "chaos" in name or "tests" in name]
