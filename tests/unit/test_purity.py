"""The core is pure: no streaming or metrics library, and one JSON codec (STYLE, issue 3)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE_FILES = sorted(
    [
        *(ROOT / "schemas").rglob("*.py"),
        *(ROOT / "pipeline" / "core").rglob("*.py"),
        ROOT / "pipeline" / "decide.py",
    ]
)
BANNED = ("faust", "mode", "aiokafka", "kafka", "prometheus_client", "rocksdict")


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


def test_core_files_exist() -> None:
    assert len(CORE_FILES) >= 14


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_core_module_imports_no_streaming_or_metrics_library(path: Path) -> None:
    top_levels = {name.split(".")[0] for name in imported_modules(path)}

    assert not top_levels & set(BANNED)


def test_importing_the_core_loads_no_streaming_or_metrics_library() -> None:
    modules = [module_name(path) for path in CORE_FILES]
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
    project_files = [*(ROOT / "schemas").rglob("*.py"), *(ROOT / "pipeline").rglob("*.py")]

    importers = {
        str(path.relative_to(ROOT))
        for path in project_files
        if any(name.split(".")[0] == "orjson" for name in imported_modules(path))
    }

    assert importers == {"schemas/codec.py"}
