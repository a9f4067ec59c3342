"""README "Train on your survey" runs as written (issue 21): its commands are read from README.md
and run in order, each a real process in one folder, on small survey-like data the test writes
first (the folders the section says you bring), so the block cannot drift from what works.

The data are LensCrafter's own scenes in flux units (zero point 27, gain 3, 0.168″/px; FITS
cutouts 3×64×64 with a celestial WCS, ``BANDS``, ``MAGZERO`` and ``GAIN`` cards, as the section
asks): ellipticals with their field population as the deflectors, every non-lens kind as the
field, LensCrafter lenses as the known lenses. Only sizes change (:data:`SMALL`, each replacement
must apply to exactly one command, so an edited README fails here until the list is updated):
one training epoch, and the selection function one lens a cell at ``--cut 0.95`` (the test
region's 40 deflectors are its reference pool: 0.995 would need 200). ``tools/check_survey_readme.sh``
runs the same block on cutouts of the Hubble XDF.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
#: (text in a command of the block, what the test runs instead); each must match exactly one command.
SMALL = [
    ("-o run/ --plot", "-o run/ --plot --set epochs=1"),
    ("--out selection.fits --plot selection.png", "--out selection.fits --plot selection.png --per-cell 1 --cut 0.95"),
]
#: Cutouts per folder the section says you bring.
SIZES = {"deflectors": 32, "deflectors_test": 40, "field": 64, "field_test": 40, "known": 6}


def survey_commands(readme: str | None = None) -> list[str]:
    """The command lines of the README's "Train on your survey" bash block, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8") if readme is None else readme
    block = re.search(r"^## Train on your survey\n.*?^```bash\n(.*?)^```", text, re.S | re.M)
    assert block, "README.md has no '## Train on your survey' section with a bash block"
    out = []
    for line in block.group(1).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            assert line.startswith(("deepmine ", "python ")), f"not a deepmine or python command: {line!r}"
            out.append(line)
    return out


def shrink(commands: list[str]) -> list[str]:
    """The block with :data:`SMALL` applied (each replacement to exactly one command)."""
    out = list(commands)
    for old, new in SMALL:
        hits = [k for k, c in enumerate(out) if old in c]
        assert len(hits) == 1, f"README 'Train on your survey' changed: {old!r} matches {len(hits)} commands"
        out[hits[0]] = out[hits[0]].replace(old, new)
    return out


def _header(k: int):
    from astropy.io import fits

    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 150.1, 2.2 + 0.001 * k
    h["CRPIX1"] = h["CRPIX2"] = 32.5
    h["CDELT1"], h["CDELT2"] = -0.168 / 3600, 0.168 / 3600
    h["CUNIT1"] = h["CUNIT2"] = "deg"
    h["BANDS"], h["MAGZERO"], h["GAIN"] = "i,r,g", 27.0, 3.0
    return h


def write_survey(folder: Path) -> None:
    """The folders the section says you bring, small (:data:`SIZES`), in ``folder``."""
    from astropy.io import fits

    from deepmine.lenscrafter import craft_lenses, craft_negatives, sample_lens_params

    stacks = {
        "deflectors": craft_negatives(SIZES["deflectors"], seed=1, kinds=["elliptical"], output="float32")[0],
        "deflectors_test": craft_negatives(SIZES["deflectors_test"], seed=2, kinds=["elliptical"],
                                           output="float32")[0],
        "field": craft_negatives(SIZES["field"], seed=3, output="float32")[0],
        "field_test": craft_negatives(SIZES["field_test"], seed=4, output="float32")[0],
        "known": craft_lenses(sample_lens_params(SIZES["known"], seed=5, m_g_src=22.0), seed=5, output="float32"),
    }
    for name, stack in stacks.items():
        (folder / name).mkdir(parents=True)
        for k, cut in enumerate(stack):
            fits.PrimaryHDU(np.asarray(cut, np.float32), header=_header(k)).writeto(folder / name / f"{k:05d}.fits")


def run_block(folder: Path) -> list[str]:
    """Run the shrunk block in ``folder`` (holding :func:`write_survey`'s data); returns the commands."""
    env = dict(os.environ, DEEPMINE_NO_PROGRESS="1", COLUMNS="200", MPLBACKEND="Agg")
    commands = shrink(survey_commands())
    for line in commands:
        argv = shlex.split(line)
        cmd = ([sys.executable, "-m", "deepmine.inference.cli", *argv[1:]] if argv[0] == "deepmine"
               else [sys.executable, *argv[1:]])
        r = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=env)
        assert r.returncode == 0, f"{line}\n{r.stderr[-3000:]}"
    return commands


def test_survey_block_is_parsed_and_every_shrink_applies():
    commands = survey_commands()
    assert commands[0].startswith("deepmine craft --onto") and any(c.startswith("deepmine train") for c in commands)
    assert len(shrink(commands)) == len(commands)


@pytest.mark.slow
@pytest.mark.torch
def test_survey_readme_runs_in_order(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from astropy.table import Table

    write_survey(tmp_path)
    run_block(tmp_path)
    for name in ("painted1.npy", "painted1.ecsv", "painted2.npy", "unlensed.npy", "field.npy", "deflectors.npy",
                 "run/model.pt", "survey.onnx", "selection.fits", "selection.png", "candidates.fits", "top.png",
                 "known.fits", "trc.png"):
        assert (tmp_path / name).is_file(), name
    assert np.load(tmp_path / "field.npy", mmap_mode="r").shape == (SIZES["field"], 3, 64, 64)
    assert len(Table.read(tmp_path / "candidates.fits")) == SIZES["field_test"]
    sel = Table.read(tmp_path / "selection.fits")
    assert {"m_dfl", "q_dfl", "fraction"} <= set(sel.colnames) and int(np.sum(sel["n"])) > 0
