"""What a newcomer copies from the README works as written: the SDK example says which
interpreter runs it, and the dataset layouts are linked from it."""

from __future__ import annotations

import re

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, flags=re.S | re.M)
    assert match, title
    return match.group(1)


def test_the_sdk_example_says_to_run_it_with_the_venv_python() -> None:
    sdk = _section("Python SDK")
    before_code = sdk.split("```python")[0]
    assert ".venv/bin/python example.py" in before_code
    assert "from stillhouse import Client" in sdk


def test_the_readme_links_the_dataset_layouts() -> None:
    assert "(docs/datasets.md)" in README
    assert (ROOT / "docs" / "datasets.md").is_file()
