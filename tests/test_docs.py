"""The README and docs/ as a reader meets them: every relative link and anchor resolves, every page
of docs/ is reachable from the README, the README's test command is the one CI runs, and no phrase
names the project's own history (text only: nothing here imports torch)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
#: Phrases a user cannot resolve: the project's internal history, not the product.
HISTORY = [r"\bseeds? \d{3}", r"\bseeds \d{3}/", r"\bagents?\b", r"\bfleet issue\b", r"\bissue #?\d+",
           r"this project's", r"\b(earlier|that|other|this project's) sessions?\b", r"\bintegrator\b"]


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path.read_text()).splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        assert dest.exists(), f"{page.name}: link to {target}: no such file"
        if anchor:
            assert dest.suffix == ".md" and anchor in anchors(dest), f"{page.name}: link to {target}: no such heading"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, f"docs/{page.name} is not linked from the README"


def test_readme_picture_is_a_committed_png() -> None:
    readme = (ROOT / "README.md").read_text()
    pictures = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", readme[:readme.index("## Contents")])
    assert len(pictures) == 1 and pictures[0].endswith(".png")
    assert (ROOT / pictures[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    command = ci[-1]
    assert command == "nox -s tests lint"
    assert f"python3 -m pip install -q nox && {command}" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("page", [*PAGES, ROOT / "results" / "README.md"], ids=lambda p: p.parent.name + "/" + p.name)
def test_no_phrase_from_the_projects_history(page: Path) -> None:
    text = page.read_text()
    for pattern in HISTORY:
        found = re.search(pattern, text, flags=re.I)
        assert found is None, f"{page.name}: {found.group(0)!r} names the project's history, not the product"
