"""Every picture in docs/img is shown by a page (README or docs/), and every picture a page shows exists."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def _pages():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_docs_image_is_linked_and_every_link_resolves():
    shown = set()
    for page in _pages():
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            path = (page.parent / target).resolve()
            assert path.is_file(), f"{page.name} shows {target}, which does not exist"
            shown.add(path)
    pictures = {p.resolve() for p in (ROOT / "docs" / "img").iterdir() if p.is_file()}
    assert pictures, "docs/img holds no picture"
    unlinked = sorted(p.name for p in pictures - shown)
    assert not unlinked, f"docs/img pictures no page shows: {unlinked}"


def test_painted_mosaic_is_explained_where_it_is_shown():
    text = (ROOT / "docs" / "lenscrafter.md").read_text(encoding="utf-8")
    section = text[text.index("## Arcs on real galaxies"):]
    section = section[: section.index("\n## ", 1) if "\n## " in section[1:] else len(section)]
    assert "img/painted_xdf_mosaic.png" in section
    assert "normalis" in section and "colour" in section  # the per-band stretch's colour change is stated
