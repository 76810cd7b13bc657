"""The documentation site builds strictly: no broken link, no page left out of the nav.

``mkdocs build --strict`` with the repository's mkdocs.yml (strict there too) into a temporary
folder; the pages every operator needs first are in the built site.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in _nav_pages(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_pages(value)]
    return []


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """Exit 0, no WARNING line; every page of docs/ is in the nav and was built."""
    mkdocs = Path(sys.executable).with_name("mkdocs")
    assert mkdocs.is_file(), "mkdocs is part of the [test] extra"
    done = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["strict"] is True
    nav = set(_nav_pages(config["nav"]))
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert pages == nav
    for page in nav:
        built = tmp_path / "site" / page.replace(".md", ".html")
        assert built.is_file(), page
    index = (tmp_path / "site" / "index.html").read_text()
    for target in ("install.html", "runbooks/ca-rotation.html", "reference/events.html"):
        assert target in index, target
    events_html = (tmp_path / "site" / "reference" / "events.html").read_text()
    assert "certd.set_held" in events_html
    # The site's search finds what an on-call engineer looks for first (issue 22's evidence).
    index_json = json.loads((tmp_path / "site" / "search" / "search_index.json").read_text())
    titles = {doc["location"]: doc["title"] for doc in index_json["docs"]}
    assert "rotation" in titles["runbooks/ca-rotation.html"].lower()
    assert "install" in titles["install.html"].lower()
    held = [d for d in index_json["docs"] if "certd.set_held" in d["title"]]
    assert held, "the certd.set_held section of the events page"
    assert "notBefore" in held[0]["text"] or any("notBefore" in d["text"] for d in held)
    shutil.rmtree(tmp_path / "site")
