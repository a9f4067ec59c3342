"""Astronomers' conventions (issue 19): licence, catalogue units and kept columns, pictures, CLI habits."""
from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_code_is_bsd3_and_thesis_credited_cc_by():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "BSD-3-Clause"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License")
    assert "Neither the name of the copyright holder" in text
    readme = (ROOT / "README.md").read_text()
    credit = readme.split("## Licence and credit", 1)[1]
    assert "BSD 3-Clause" in credit and "CC-BY 4.0" in credit and "Pourrahmani" in credit
