#!/usr/bin/env bash
# Run the README's "Train on your survey" commands, as written there, on small real data:
# cutouts of the Hubble XDF image that scikit-image ships (an 8-bit RGB composite, not flux:
# tools/evaluate_bundled.py's hdf_field makes it HSC-like, zero point 27, 0.168"/px, and says
# which assumptions that takes). Galaxies of the left half are deflectors/, of the right half
# deflectors_test/; random cutouts of each half are field/ and field_test/; known/ holds 12
# LensCrafter lenses. Only sizes change: training runs 1 epoch (--set epochs=1) and the selection
# function 1 lens a cell at --cut 0.98 (162 test deflectors: fewer than the 200 that 0.995 needs).
#
#   tools/check_survey_readme.sh [WORKDIR]      (default build/survey_readme; needs deepmine[train])
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$ROOT/build/survey_readme}
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
export DEEPMINE_NO_PROGRESS=1

python - "$ROOT" <<'PY'
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

sys.path.insert(0, str(Path(sys.argv[1]) / "tools"))
from evaluate_bundled import hdf_field  # noqa: E402

from deepmine.lenscrafter import craft_lenses, sample_lens_params

img, cands, mags, info = hdf_field(max_galaxies=10_000)
w = img.shape[2]
half, S = w // 2, 64
rng = np.random.default_rng(5)


def header(k):
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 53.16, -27.78 + 0.001 * k
    h["CRPIX1"] = h["CRPIX2"] = 32.5
    h["CDELT1"], h["CDELT2"] = -0.168 / 3600, 0.168 / 3600
    h["BANDS"], h["MAGZERO"], h["GAIN"] = "i,r,g", 27.0, 3.0
    return h


def write(folder, cutouts):
    Path(folder).mkdir()
    for k, c in enumerate(cutouts):
        fits.PrimaryHDU(np.asarray(c, np.float32), header=header(k)).writeto(f"{folder}/{k:05d}.fits")


for folder, ok in (("deflectors", lambda x: x + S <= half), ("deflectors_test", lambda x: x >= half)):
    write(folder, [img[:, y:y + S, x:x + S] for _, _, _, x, y in cands if ok(x)])
for folder, (lo, hi) in (("field", (0, half - S)), ("field_test", (half, w - S))):
    xs, ys = rng.integers(lo, hi + 1, 300), rng.integers(0, img.shape[1] - S + 1, 300)
    write(folder, [img[:, y:y + S, x:x + S] for x, y in zip(xs, ys)])
write("known", craft_lenses(sample_lens_params(12, seed=3, m_g_src=22.0), seed=3, output="float32"))
print({f: len(list(Path(f).iterdir())) for f in ("deflectors", "deflectors_test", "field", "field_test", "known")})
PY

# the README's block, with the two size changes above
awk '/^## Train on your survey/{on=1} on&&/^```bash/{code=1; next} code&&/^```/{exit} code' "$ROOT/README.md" \
  | sed -e 's/^\(deepmine train .*\)$/\1 --set epochs=1/' \
        -e 's/^\(deepmine selection .*\)$/\1 --per-cell 1 --cut 0.98/' > commands.sh
cat commands.sh
bash -euxo pipefail commands.sh
ls -l
