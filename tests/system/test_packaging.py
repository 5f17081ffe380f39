"""pyproject.toml in the form current setuptools reads without a warning (issue 18).

`license = { text = "MIT" }` made setuptools >= 77 print a deprecation banner three times during
`./run` set-up (once per build hook). Checked by hand: `pip install -e . --no-deps` in a scratch
venv (pip 26.3, setuptools 84.2.1 in the build env) printed no license warning after this.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_is_an_spdx_string_with_its_file() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "MIT"  # PEP 639: an SPDX expression, not a table
    for pattern in project["license-files"]:
        matches = list(ROOT.glob(pattern))
        assert matches, f"license-files pattern {pattern!r} matches no file"
        assert "MIT License" in matches[0].read_text()


def test_build_needs_a_setuptools_that_reads_that_form() -> None:
    # setuptools < 77 refuses `license` as a string: the build must not pick one.
    (req,) = [r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    found = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", req)
    assert found, req
    assert int(found.group(1)) >= 77
