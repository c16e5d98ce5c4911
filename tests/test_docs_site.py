"""The docs site builds offline with ``mkdocs build --strict`` (a broken link or anchor fails
it), its generated reference pages cover the code they describe, and no document names a path
outside the repository or loads anything from another host."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from api.app import create_app
from core.errors import CATALOGUE
from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [
    ROOT / "README.md",
    ROOT / "CONTRIBUTING.md",
    ROOT / "mkdocs.yml",
    *sorted((ROOT / "docs").rglob("*.md")),
]
PAGES = [
    "index",
    "user-guide",
    "sdk",
    "cli",
    "operator",
    "scaling",
    "security",
    "benchmarks",
    "contributing",
    "reference/settings",
    "reference/api",
    "reference/errors",
    "reference/cli",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out


def _page(site: Path, name: str) -> str:
    # The offline plugin builds name.html (it works from file://, without a server).
    return (site / f"{name}.html").read_text()


def test_every_page_is_built(site: Path) -> None:
    missing = [name for name in PAGES if not (site / f"{name}.html").is_file()]
    assert missing == []


def test_settings_reference_lists_every_setting(site: Path) -> None:
    page = _page(site, "reference/settings")
    missing = [n for n in Settings.model_fields if f"STILLHOUSE_{n.upper()}" not in page]
    assert missing == []


def test_every_setting_has_a_description() -> None:
    assert [n for n, f in Settings.model_fields.items() if not f.description] == []


def test_api_reference_lists_every_route(site: Path) -> None:
    page = _page(site, "reference/api")
    paths = create_app().openapi()["paths"]
    assert [p for p in paths if f"{p}</code>" not in page] == []


def test_error_reference_lists_every_code(site: Path) -> None:
    page = _page(site, "reference/errors")
    assert [c.value for c in CATALOGUE if f"<code>{c.value}</code>" not in page] == []


def test_contributing_is_in_the_site(site: Path) -> None:
    assert "Architecture map" in _page(site, "contributing")


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "img": "src", "link": "href", "iframe": "src"}
        for name, value in attrs:
            if name == wanted.get(tag) and value and (tag != "link" or _loads(attrs)):
                self.urls.append(value)


def _loads(attrs: list[tuple[str, str | None]]) -> bool:
    rel = dict(attrs).get("rel") or ""
    return any(kind in rel for kind in ("stylesheet", "icon", "preload", "modulepreload"))


def test_site_loads_nothing_from_another_host(site: Path) -> None:
    remote = set()
    for page in site.rglob("*.html"):
        parser = _Assets()
        parser.feed(page.read_text())
        remote |= {u for u in parser.urls if re.match(r"^(https?:)?//", u)}
    assert remote == set()


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_document_names_a_path_outside_the_repository(path: Path) -> None:
    text = path.read_text()
    # A path of one machine: not a relative one such as `$STILLHOUSE_DATA_DIR/work/<job>`.
    found = re.findall(r"(?<![\w$}>)/])/(?:work|root|home)/|\.\./shared|(?<![\w/])shared/", text)
    assert found == []


def test_contributing_names_only_paths_that_exist() -> None:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    tops = "api|core|models|worker|client|stillhouse_server|migrations|bench|tests|docs|docker"
    named = set(re.findall(rf"`((?:{tops})/[\w./-]*)`", text))
    assert named, "the pattern found no path"
    assert sorted(p for p in named if not (ROOT / p).exists()) == []


def test_readme_is_the_first_ten_minutes() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 150
    # .ci/run runs the README's test command.
    assert "make test" in text and "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("name", ["README.md", "CONTRIBUTING.md"])
def test_relative_links_of_the_top_documents_exist(name: str) -> None:
    text = (ROOT / name).read_text()
    targets = re.findall(r"\]\((?!https?:|#)([^)#]+)", text)
    assert sorted(t for t in targets if not (ROOT / t).exists()) == []
