"""The suite's layout (issue 17 item 6): tests mirror the packages, and helpers are shared through
helper modules or a conftest, never by importing one test module from another (which runs the
imported module's tests twice under two names and ties unrelated files together)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> list[str]:
    """Every module ``path`` imports, relative imports resolved against its package."""
    package = path.relative_to(TESTS.parent).parent.parts
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.append(module)
            # `from . import test_x` names the module in the alias.
            found.extend(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_no_test_module_imports_another() -> None:
    offenders = [
        f"{path.relative_to(TESTS.parent)} imports {module}"
        for path in sorted(TESTS.rglob("*.py"))
        for module in imported_modules(path)
        if module.startswith("tests.") and module.rsplit(".", 1)[-1].startswith("test_")
    ]
    assert not offenders, "move the shared code into a helper module or conftest.py:\n" + "\n".join(offenders)


def test_no_test_module_sits_directly_in_tests() -> None:
    flat = sorted(p.name for p in TESTS.glob("test_*.py"))
    assert not flat, f"put these under tests/shared, tests/showcase, tests/system or an app's folder: {flat}"


def test_every_test_folder_is_a_package() -> None:
    """Test modules share basenames across folders (test_api.py, test_scaleout.py): each folder
    needs an ``__init__.py`` so they import as distinct modules."""
    missing = sorted(
        str(d.relative_to(TESTS.parent))
        for d in {p.parent for p in TESTS.rglob("test_*.py")}
        if not (d / "__init__.py").exists()
    )
    assert not missing, f"no __init__.py in {missing}"
