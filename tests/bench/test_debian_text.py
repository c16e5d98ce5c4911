"""bench/debian_text.py's parsing, without apt: stanzas, long descriptions, the split."""

from __future__ import annotations

from bench.debian_text import _bucket, _stanzas, clean_long

DUMP = """Package: 0ad
Source: 0ad
Section: games
Description: Real-time strategy game
Description-md5: d9

Package: libfoo-dev
Source: foo (1.2-3)
Section: contrib/libdevel
Description: Foo, development files
"""


def test_stanzas_keep_fields_and_continuation_lines() -> None:
    records = _stanzas(DUMP + "\nPackage: x\nDescription-en: short\n long one\n .\n two\n")
    assert [r["Package"] for r in records] == ["0ad", "libfoo-dev", "x"]
    assert records[1]["Section"] == "contrib/libdevel"
    assert records[2]["Description-en+"] == [" long one", " .", " two"]


def test_long_description_layout_is_undone() -> None:
    lines = [" 0 A.D. is a  free,", " open-source game.", " .", " It runs on  Linux."]
    assert clean_long(lines) == "0 A.D. is a free, open-source game. It runs on Linux."


def test_split_buckets_are_fixed_and_spread() -> None:
    # SHA-256 of the name: no seed or run moves a package (pinned: the published splits)
    assert (_bucket("0ad"), _bucket("python3.11")) == (84, 28)
    buckets = [_bucket(f"pkg{i}") for i in range(2000)]
    assert min(buckets) >= 0 and max(buckets) <= 99
    share = sum(b < 50 for b in buckets) / len(buckets)
    assert 0.45 < share < 0.55
