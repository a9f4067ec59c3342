"""``deepmine craft`` end to end: stacks, tables, preview, errors."""
import numpy as np
import pytest
from astropy.table import Table

from deepmine.lenscrafter import craft_lenses, read_lens_params


def test_craft_lenses_and_reproduce_them_from_the_table(cli, tmp_path):
    out = tmp_path / "lenses.npy"
    rc, _, err = cli("craft", "--n", 30, "--out", out, "--seed", 4)
    assert rc == 0, err
    stack = np.load(out)
    assert stack.shape == (30, 3, 64, 64) and stack.dtype == np.uint8
    table = read_lens_params(tmp_path / "lenses.ecsv")
    assert len(table) == 30 and table.meta["seed"] == 4 and table.meta["bands"] == "i,r,g"
    np.testing.assert_array_equal(stack, craft_lenses(table, seed=4))
    rc, _, err = cli("craft", "--params", tmp_path / "lenses.ecsv", "--out", tmp_path / "again.npy", "--seed", 4,
                     "--dtype", "float32", "--no-noise", "--size", 48)
    assert rc == 0, err
    again = np.load(tmp_path / "again.npy")
    assert again.dtype == np.float32 and again.shape == (30, 3, 48, 48)


def test_craft_negatives_and_psf_file(cli, tmp_path):
    psf = np.zeros((9, 9))
    psf[3:6, 3:6] = 1.0
    np.save(tmp_path / "psf.npy", psf)
    rc, _, err = cli("craft", "--n", 16, "--out", tmp_path / "neg.npy", "--negatives", "--psf", tmp_path / "psf.npy",
                     "--kinds", "ring,blend")
    assert rc == 0, err
    assert np.load(tmp_path / "neg.npy").shape == (16, 3, 64, 64)
    tab = Table.read(tmp_path / "neg.ecsv")
    assert set(tab["kind"]) == {"ring", "blend"}


def test_preview_png(cli, tmp_path):
    rc, _, err = cli("craft", "--preview", tmp_path / "p.png")
    assert rc == 0, err
    assert (tmp_path / "p.png").stat().st_size > 50_000


@pytest.mark.parametrize("args,needle", [
    (["--n", 3, "--out", "x.txt"], "--out x.txt: expected a .npy"),
    (["--n", 3], "--out is required"),
    (["--out", "x.npy"], "--n is required"),
    (["--n", 3, "--out", "x.npy", "--dtype", "int16"], "--dtype"),
    (["--n", 3, "--out", "x.npy", "--psf", "missing.fits"], "missing.fits: PSF file not found"),
    (["--n", 3, "--out", "x.npy", "--psf", "bad.npy"], "bad.npy: PSF kernel"),
    (["--n", 3, "--out", "x.npy", "--no-psf", "--psf", "bad.npy"], "contradict"),
    (["--n", 3, "--out", "x.npy", "--params", "bad.ecsv"], "bad.ecsv: lens parameter theta_e"),
    (["--n", 3, "--out", "x.npy", "--kinds", "ring"], "--kinds applies to --negatives"),
    (["--n", 3, "--out", "x.npy", "--negatives", "--kinds", "comet"], "kinds: unknown 'comet'"),
    (["--n", 3, "--out", "nodir/x.npy"], "does not exist"),
])
def test_bad_input_gives_one_line(cli, tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    np.save("bad.npy", np.ones((4, 4)))
    from deepmine.lenscrafter import reference_lens_params

    t = reference_lens_params(2)
    t["theta_e"][1] = -1.0
    t.write("bad.ecsv")
    rc, out, err = cli("craft", *args)
    assert rc != 0
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "x.npy").exists()
