"""The docs point at what is there: every relative link resolves, every page is in the index, every task kind
is in the training table, and the raw benchmark files sit in one folder per study."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import pulse.tasks  # noqa: F401  (the task kinds register themselves)
from pulse import registry

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", ROOT / "zoo" / "README.md", *DOCS.rglob("*.md")])

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INDENTED = re.compile(r"^(?: {4}|\t).*$", re.M)  # an indented code block's lines
CODE = re.compile(r"(`+).+?\1", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def relative_links(text: str) -> list[str]:
    """The targets of a page's markdown links and images that point into the repository (code left out)."""
    text = CODE.sub("", INDENTED.sub("", FENCE.sub("", text)))
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0].split("?", 1)[0]
        if path and not (page.parent / path).exists():
            broken.append(target)
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert not broken_links(page), f"{page.relative_to(ROOT)} links to files that are not there: {broken_links(page)}"


def test_the_link_check_finds_a_broken_link_and_ignores_code_and_urls(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "here.md").write_text("x")
    page.write_text("[a](here.md) [b](gone.md#part) ![c](img/gone.png) [d](https://example.com/x) [e](#anchor)\n"
                    "`[f](in-code.md)`\n\n```\n[g](in-fence.md)\n```\n\n    [h](indented.md)\n")
    assert broken_links(page) == ["gone.md#part", "img/gone.png"]


def test_every_page_is_in_the_index():
    index = set(relative_links((DOCS / "README.md").read_text(encoding="utf-8")))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")
             if p.parent == DOCS or p.parent.name == "blocks"} - {"README.md"}
    assert not pages - index, f"docs/README.md does not list {sorted(pages - index)}"
    assert "bench/README.md" in index


def test_every_shipped_task_kind_is_in_the_training_table():
    tasks = (DOCS / "training.md").read_text(encoding="utf-8").split("## Tasks", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `([a-z_0-9]+)` \|", tasks, re.M))
    shipped = {e.kind for e in registry.entries(role="task") if e.defined_in.startswith("pulse/")}
    assert shipped, "no task kinds registered"
    assert not shipped - rows, f"docs/training.md's task table misses {sorted(shipped - rows)}"


def test_raw_benchmark_files_sit_in_one_folder_per_study():
    bench = DOCS / "bench"
    loose = sorted(p.name for p in bench.iterdir() if p.is_file() and p.name != "README.md")
    assert not loose, f"docs/bench/ holds loose files {loose}: move each into its study's folder"
    listed = set(re.findall(r"\]\(([a-z0-9-]+)/\)", (bench / "README.md").read_text(encoding="utf-8")))
    studies = {p.name for p in bench.iterdir() if p.is_dir()}
    assert studies == listed, f"docs/bench/README.md lists {sorted(listed)}, the folders are {sorted(studies)}"
