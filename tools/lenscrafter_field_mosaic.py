"""Write docs/img/lenscrafter_field_mosaic.png and print the sources-per-cutout table of docs/lenscrafter.md.

Usage: python tools/lenscrafter_field_mosaic.py [OUT.png]  (a few seconds on 2 cores)
"""
from __future__ import annotations

import sys

import numpy as np

from deepmine.inference.mosaic import write_mosaic
from deepmine.lenscrafter import craft_lenses, craft_negatives, sample_lens_params
from deepmine.lenscrafter.field import field_population, galaxy_counts_between, star_counts_between

BINS = (17.0, 20.0, 22.0, 23.0, 24.0, 25.0, 26.0)


def mosaic(path):
    neg, tab = craft_negatives(48, seed=2024)
    lenses = craft_lenses(sample_lens_params(16, seed=2025), seed=2025)
    pop_n = field_population(48, seed=2024, salt=0x4649 + 1)
    pop_l = field_population(16, seed=2025)

    def label(pop, i, head):
        p = pop[(pop["index"] == i) & pop["inside"]]
        return f"{head}\n{int((p['kind'] == 'galaxy').sum())} gal, {int((p['kind'] == 'star').sum())} star"

    labels = [label(pop_n, i, str(k)) for i, k in enumerate(tab["kind"])]
    labels += [label(pop_l, i, "LENS") for i in range(16)]
    write_mosaic(list(neg) + list(lenses), labels, path, ncols=8, tile_px=112, bands=["i", "r", "g"],
                 title="LensCrafter: 48 non-lens scenes and 16 lenses with the HSC-Wide field population "
                       "(i<26; i,r,g -> R,G,B; 64x64 px, 0.168\"/px)")


def table(n=20000):
    area = (64 * 0.168) ** 2
    pop = field_population(n, seed=7)
    ins = pop[pop["inside"]]
    rows = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        m = (ins["m_i"] >= lo) & (ins["m_i"] < hi)
        g = m & (ins["kind"] == "galaxy")
        s = m & (ins["kind"] == "star")
        blue = 1.0 - float(np.mean(ins["red"][g])) if g.any() else float("nan")
        rows.append((lo, hi, g.sum() / n, galaxy_counts_between(lo, hi, area), s.sum() / n,
                     star_counts_between(lo, hi, area), blue))
    print("| i | galaxies/cutout crafted | published | stars/cutout crafted | published | blue share |")
    print("|---|---|---|---|---|---|")
    for lo, hi, g, ge, s, se, b in rows:
        print(f"| {lo:g}–{hi:g} | {g:.3f} | {ge:.3f} | {s:.4f} | {se:.4f} | {b:.0%} |")
    gt = sum(r[2] for r in rows), sum(r[3] for r in rows), sum(r[4] for r in rows), sum(r[5] for r in rows)
    print(f"| all | {gt[0]:.2f} | {gt[1]:.2f} | {gt[2]:.3f} | {gt[3]:.3f} | |")
    print(f"(stars 16–17 not in the bins: {star_counts_between(16, 17, area):.4f} per cutout; {n} cutouts)")


if __name__ == "__main__":
    mosaic(sys.argv[1] if len(sys.argv) > 1 else "docs/img/lenscrafter_field_mosaic.png")
    table()
