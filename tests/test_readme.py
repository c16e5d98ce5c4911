"""What a newcomer copies from the README works as written: the SDK example says which
interpreter runs it, and the dataset layouts are linked from it."""

from __future__ import annotations

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_the_sdk_examples_say_to_run_them_with_the_venv_python() -> None:
    assert ".venv/bin/python - <<'PY'\nimport os\n\nfrom stillhouse import Client" in README
    sdk = (ROOT / "docs" / "sdk.md").read_text()
    assert "`.venv/bin/python example.py`" in sdk


def test_the_readme_links_the_dataset_layouts() -> None:
    assert "(docs/datasets.md)" in README
    assert (ROOT / "docs" / "datasets.md").is_file()
