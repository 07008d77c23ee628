"""The README and docs/ link only to files that exist in the repository (a moved page or a
renamed figure leaves no dead link behind), and every main.py command they show in a code
block is one main.py accepts as written (a renamed or removed flag leaves no dead command)."""
import glob
import os
import re
import shlex

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCED = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)
MAIN_CALL = re.compile(r"(?:^|\s)(?:\.venv/bin/)?python main\.py\b(.*)")


def relative_links(page):
    """(path, anchor) of each relative link of a Markdown page; path "" for the page itself."""
    text = open(page, encoding="utf-8").read()
    targets = (m.group(1).partition("#") for m in LINK.finditer(text))
    return [(path, anchor) for path, _, anchor in targets if not re.match(r"[a-z]+:", path)]


def local_links(page):
    """Relative link targets of a Markdown page, without their #anchor."""
    return [path for path, _ in relative_links(page) if path]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_relative_link_names_a_file_in_the_repository(page):
    missing = [t for t in local_links(page)
               if not os.path.exists(os.path.join(os.path.dirname(page), t))]
    assert not missing, f"{os.path.relpath(page, ROOT)} links to missing files: {missing}"


def main_commands(page):
    """The arguments of each `python main.py ...` line in a page's fenced code blocks
    (backslash continuations joined, a trailing `# comment` dropped)."""
    text = open(page, encoding="utf-8").read()
    commands = []
    for block in FENCED.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            match = MAIN_CALL.search(line.split(" # ")[0])
            if match:
                commands.append(shlex.split(match.group(1)))
    return commands


DOC_COMMANDS = [(os.path.relpath(page, ROOT), argv) for page in PAGES
                for argv in main_commands(page)]


def test_the_pages_show_main_py_commands():
    pages = {page for page, _ in DOC_COMMANDS}
    assert {"README.md", os.path.join("docs", "usage.md")} <= pages


@pytest.mark.parametrize("page, argv", DOC_COMMANDS,
                         ids=[f"{page}:{' '.join(argv)[:60]}" for page, argv in DOC_COMMANDS])
def test_every_main_py_command_in_the_docs_parses(page, argv, monkeypatch):
    import main
    monkeypatch.chdir(ROOT)  # the commands name configs/... from the repository root
    parser, runs = main.parse_runs(argv)
    assert runs, f"{page}: python main.py {' '.join(argv)} names no run"


def github_anchors(page):
    """The anchors GitHub gives a Markdown page's headings: lower case, punctuation dropped
    (word characters, hyphens and spaces kept), spaces as hyphens, -1, -2 ... on repeats."""
    text = FENCED.sub("", open(page, encoding="utf-8").read())
    anchors, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M):
        heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_anchor_names_a_heading_of_its_page(page):
    anchors = {}  # linked page -> its headings' anchors, each page read once
    dead = []
    for path, anchor in relative_links(page):
        linked = os.path.join(os.path.dirname(page), path) if path else page
        if not anchor or not linked.endswith(".md") or not os.path.exists(linked):
            continue
        if linked not in anchors:
            anchors[linked] = github_anchors(linked)
        if anchor not in anchors[linked]:
            dead.append(f"{path}#{anchor}")
    assert not dead, f"{os.path.relpath(page, ROOT)} links to headings that are not there: {dead}"
