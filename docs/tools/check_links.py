#!/usr/bin/env python3
"""Checks every relative link of the book (docs/src) and of the README: the file exists and, for
`page.md#anchor`, the page has that heading (mdBook's ids: lowercase, punctuation dropped, spaces
as '-'). Web links are not fetched (CI has no Internet). Exits 1 listing what is broken."""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SRC = ROOT / "docs/src"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*)$", re.M)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def anchor(title):
    title = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", title)
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.strip().replace(" ", "-")


def anchors(path):
    text = FENCE.sub("", path.read_text())
    return {anchor(h) for h in HEADING.findall(text)}


def check(page, broken):
    text = FENCE.sub("", page.read_text())
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#") and page.parent != SRC:
            continue
        path, _, frag = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{page.relative_to(ROOT)}: {target}: no such file")
        elif frag and dest.suffix == ".md" and frag not in anchors(dest):
            broken.append(f"{page.relative_to(ROOT)}: {target}: no such heading")


def main():
    broken = []
    pages = sorted(SRC.glob("*.md")) + [ROOT / "README.md"]
    for page in pages:
        check(page, broken)
    summary = (SRC / "SUMMARY.md").read_text()
    for page in sorted(SRC.glob("*.md")):
        if page.name != "SUMMARY.md" and f"({page.name})" not in summary:
            broken.append(f"docs/src/{page.name}: not in SUMMARY.md")
    if broken:
        print("\n".join(broken))
        sys.exit(1)
    print(f"links of {len(pages)} pages resolve")


if __name__ == "__main__":
    main()
