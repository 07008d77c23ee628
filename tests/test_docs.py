"""The README and docs/ link only to files that exist in the repository (a moved page or a
renamed figure leaves no dead link behind)."""
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def local_links(page):
    """Relative link targets of a Markdown page, without their #anchor."""
    text = open(page, encoding="utf-8").read()
    targets = (m.group(1).split("#")[0] for m in LINK.finditer(text))
    return [t for t in targets if t and not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_relative_link_names_a_file_in_the_repository(page):
    missing = [t for t in local_links(page)
               if not os.path.exists(os.path.join(os.path.dirname(page), t))]
    assert not missing, f"{os.path.relpath(page, ROOT)} links to missing files: {missing}"
