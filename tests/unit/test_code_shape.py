"""The code's shape, kept by tests: no module imports the CLI, the package imports without it, no
function grows past 60 lines, and ruff's formatter and linter pass (when ruff is installed)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = [ROOT / "gpuctl", ROOT / "deploy", ROOT / "tests" / "harness"]
MAX_FUNCTION_LINES = 59


def python_files() -> list[Path]:
    return sorted(p for folder in SOURCE_DIRS for p in folder.rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_no_module_of_the_package_imports_the_cli():
    """Only the entry point (gpuctl/entry.py, which decides gevent's patching first) imports the CLI."""
    offenders = [
        str(p.relative_to(ROOT))
        for p in python_files()
        if p.name not in ("cli.py", "entry.py") and "gpuctl.cli" in imported_modules(p) and "harness" not in p.parts
    ]
    assert offenders == []


def test_every_module_imports_with_the_cli_made_unimportable():
    modules = [
        "gpuctl." + ".".join(p.relative_to(ROOT / "gpuctl").with_suffix("").parts)
        for p in (ROOT / "gpuctl").rglob("*.py")
        if p.name not in ("__init__.py", "cli.py")
    ]
    modules += [f"gpuctl.deploy.{p.stem}" for p in (ROOT / "deploy").glob("*.py") if p.name != "__init__.py"]
    code = (
        "import importlib, sys\n"
        "sys.modules['gpuctl.cli'] = None  # any import of it now raises ImportError\n"
        f"for name in {sorted(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print('imported', len(sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("imported")


def test_no_function_is_longer_than_sixty_lines():
    long = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


@pytest.mark.parametrize("command", [["format", "--check"], ["check"]], ids=["format", "lint"])
def test_ruff_passes(command):
    if shutil.which("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e .[test] installs it)")
    result = subprocess.run(["ruff", *command, "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
