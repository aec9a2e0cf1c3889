# SPDX-License-Identifier: Apache-2.0
# The documentation's relative links lead somewhere: files exist, anchors name real headings.
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slugs(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -N repeats."""
    seen: Counter[str] = Counter()
    out = set()
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # no headings in code
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        out.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return out


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_slugs_follow_github() -> None:
    page = ROOT / "docs" / "export.md"
    assert "flash-and-ram-costs-zerobitcostflashpy-zerobitcostrampy" in slugs(page)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT)}")
        elif anchor and file.suffix == ".md" and anchor not in slugs(file):
            broken.append(f"{target}: no heading with anchor #{anchor} in {file.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_benchmarks_contents_lists_every_section() -> None:
    page = ROOT / "docs" / "benchmarks.md"
    text = page.read_text()
    contents = text.split("\n## ", 2)[1]
    assert contents.startswith("Contents"), "docs/benchmarks.md opens with its contents"
    listed = {t[1:] for t in links(page) if t.startswith("#") and f"(#{t[1:]})" in contents}
    sections = slugs(page) - {"benchmarks", "contents"}
    assert sections - listed == set(), "sections missing from the contents"
