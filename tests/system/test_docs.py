"""The documents a newcomer reads stay true to the repository (issue 17 item 7).

The 1,700-line README was split into a short README and one document per part; these checks keep
the pieces from drifting apart: links that resolve, a Layout table that lists every folder, and a
guarantees table whose every test exists.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import httpx
import pytest

from tests.rig import LiveServer, read_events

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
GUARANTEES = ROOT / "docs" / "guarantees.md"

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def documents() -> list[Path]:
    """The top README, each folder's README, and everything under docs/."""
    found = [README, *sorted(ROOT.glob("*/README.md")), *sorted((ROOT / "docs").glob("*.md"))]
    # Not what tools write beside the code (.pytest_cache/README.md, .venv, node_modules).
    top = len(ROOT.parts)
    return [p for p in found if p.parts[top] != "node_modules" and not p.parts[top].startswith(".")]


def links(doc: Path) -> list[str]:
    text = FENCE.sub("", doc.read_text(encoding="utf-8"))  # code blocks hold no links, only look-alikes
    return [t for t in LINK.findall(text) if not t.startswith(("http://", "https://", "mailto:"))]


def relative_links(doc: Path) -> list[str]:
    return [t.split("#", 1)[0] for t in links(doc) if not t.startswith("#")]


def anchors(doc: Path) -> set[str]:
    """The ids GitHub gives a document's headings: lower case, punctuation dropped, spaces as -."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", doc.read_text(encoding="utf-8")), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def top_level_folders() -> set[str]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {line.split("/", 1)[0] for line in listed.splitlines() if "/" in line}


def test_the_documents_are_there() -> None:
    names = {str(p.relative_to(ROOT)) for p in documents()}
    for name in (
        "README.md",
        "shared/README.md",
        "chat/README.md",
        "dashboard/README.md",
        "remote_exec/README.md",
        "showcase/README.md",
        "docs/operations.md",
        "docs/guarantees.md",
        "docs/mux.md",
    ):
        assert name in names, f"{name} is missing"


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_that_exists(doc: Path) -> None:
    broken = []
    for target in relative_links(doc):
        path = (doc.parent / target).resolve()
        if path.exists():
            continue
        broken.append(target)
    assert not broken, f"{doc.relative_to(ROOT)} links to missing files: {broken}"


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_anchor_names_a_heading_of_its_document(doc: Path) -> None:
    # Sections moved between files when the README was split: a link to "#security" that stayed
    # behind would open the right file at the top, or the wrong file.
    broken = []
    for target in links(doc):
        if "#" not in target:
            continue
        file, anchor = target.split("#", 1)
        path = (doc.parent / file).resolve() if file else doc
        if path.is_file() and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(target)
    assert not broken, f"{doc.relative_to(ROOT)} links to headings that do not exist: {broken}"


def test_the_layout_table_lists_every_top_level_folder() -> None:
    text = README.read_text(encoding="utf-8")
    layout = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in layout.splitlines() if line.startswith("| `")]
    listed = {name.rstrip("/") for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[1])}
    missing = sorted(top_level_folders() - listed)
    assert not missing, f"README's Layout table does not list: {missing}"


def test_every_test_named_in_the_guarantees_exists() -> None:
    refs = TEST_REF.findall(GUARANTEES.read_text(encoding="utf-8"))
    assert len(refs) >= 40, refs  # the table is the point of the file
    missing = []
    for file, name in refs:
        path = ROOT / file
        if not path.is_file() or not re.search(rf"^(async )?def {name}\(", path.read_text(encoding="utf-8"), re.M):
            missing.append(f"{file}::{name}")
    assert not missing, f"docs/guarantees.md names tests that do not exist: {missing}"


def test_the_readme_is_short_and_keeps_the_test_command_ci_runs() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 260, f"README.md has {len(lines)} lines; move detail to the documents it links"
    # .ci/run runs exactly the README's test command.
    assert any(line.startswith("./run test ") for line in lines)
    assert "exec ./run test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_the_minimal_app_in_the_library_reference_runs() -> None:
    """The first Python block of shared/README.md ("A minimal app") is code people paste: it must
    build, publish and stream as written (it used a state key the app contract replaced)."""
    text = (ROOT / "shared" / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert block, "shared/README.md has no Python example"
    # A module of its own: Litestar reads the handlers' annotations from their module.
    module = types.ModuleType("readme_minimal_app")
    sys.modules[module.__name__] = module
    try:
        exec(compile(block.group(1), "shared/README.md", "exec"), module.__dict__)  # our own document
        app = module.app
    finally:
        del sys.modules[module.__name__]
    with LiveServer(factory=lambda: app) as server:
        first, second = (httpx.post(f"{server.url}/news", json={"n": n}, timeout=5) for n in (1, 2))
        assert first.status_code == second.status_code == 201, first.text
        # A client resuming after the first event gets the second, as the section promises.
        got = read_events(f"{server.url}/news/events", n=1, headers={"Last-Event-ID": first.json()["id"]})
        assert [(e.event, json.loads(e.data), e.id) for e in got] == [("news", {"n": 2}, second.json()["id"])]
