"""Debian's package descriptions and their sections: a real labelled text set, offline.

``apt-cache dumpavail`` lists every package apt knows (about 64,000 on bookworm): its name,
``Section`` and the one-line short description. The long descriptions live in apt's
``Translation-en`` files, which Debian's container images do not fetch (``Acquire::Languages
"none"``); ``apt-get update -o Acquire::Languages=en`` fetches them (about 6 MB), and
``apt-helper cat-file`` reads them. Without them the texts are the short descriptions alone,
and ``DebianText.source`` says so.

Text: the short description, a blank, the long description with its layout undone (the
leading space of each line, the " ." paragraph breaks, runs of whitespace). Label: the
section without its archive area ("contrib/", "non-free/", "non-free-firmware/"), kept when
it is one of the ``CLASSES`` most frequent sections; the rest is dropped. Splits by the
SHA-256 of the *source* package's name (no seed: every run, every seed, the same split;
binary packages built from one source, such as ``0ad`` and ``0ad-data``, often share their
long description and so land on the same side): the first
``TEACHER`` percent teach the teacher (labelled), the next ``TRANSFER`` are the transfer set
(distillation sees no labels; they are kept for the hard-label twin), the rest is the test
set (held out: nothing is tuned on it). Parsed once and cached as JSON under ``cache``.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

CLASSES = 20
TEACHER, TRANSFER = 50, 30  # percent of packages; the test set is the remaining 20
AREAS = ("contrib/", "non-free/", "non-free-firmware/")
LISTS = Path("/var/lib/apt/lists")
CACHE_VERSION = 2


@dataclass(frozen=True)
class Split:
    texts: list[str]
    labels: list[int]
    names: list[str]  # binary package names


@dataclass(frozen=True)
class DebianText:
    sections: list[str]  # label i is sections[i]
    teacher: Split
    transfer: Split
    test: Split
    source: str


def clean_long(lines: list[str]) -> str:
    """A long description's continuation lines as one paragraph of plain text."""
    words = []
    for line in lines:
        line = line[1:] if line.startswith(" ") else line
        if line.strip() == ".":
            continue
        words.append(line.strip())
    return re.sub(r"\s+", " ", " ".join(words)).strip()


def _stanzas(text: str) -> list[dict[str, str | list[str]]]:
    out: list[dict[str, str | list[str]]] = []
    record: dict[str, str | list[str]] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if record:
                out.append(record)
            record, key = {}, ""
        elif line[0] in " \t" and key:
            extra = record.setdefault(key + "+", [])
            assert isinstance(extra, list)
            extra.append(line)
        else:
            key, _, value = line.partition(":")
            record[key] = value.strip()
    if record:
        out.append(record)
    return out


def _long_descriptions() -> tuple[dict[tuple[str, str], str], int]:
    """(package, Description-md5) -> cleaned long description, from the Translation-en
    files apt has; and how many files were read."""
    found: dict[tuple[str, str], str] = {}
    files = sorted(LISTS.glob("*_i18n_Translation-en*"))
    for path in files:
        done = subprocess.run(
            ["/usr/lib/apt/apt-helper", "cat-file", str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        for r in _stanzas(done.stdout):
            long = r.get("Description-en+")
            if isinstance(long, list):
                found[(str(r.get("Package")), str(r.get("Description-md5")))] = clean_long(long)
    return found, len(files)


def _bucket(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % 100


def parse() -> DebianText:
    dump = subprocess.run(
        ["apt-cache", "dumpavail"], capture_output=True, text=True, check=True
    ).stdout
    longs, n_files = _long_descriptions()
    packages: dict[str, tuple[str, str, str]] = {}  # name -> (section, text, source package)
    with_long = 0
    for r in _stanzas(dump):
        name, section, short = r.get("Package"), r.get("Section"), r.get("Description")
        if not (isinstance(name, str) and isinstance(section, str) and isinstance(short, str)):
            continue
        if name in packages:
            continue
        for area in AREAS:
            section = section.removeprefix(area)
        long = longs.get((name, str(r.get("Description-md5"))), "")
        if long:
            with_long += 1
        source = str(r.get("Source") or name).split(" ", 1)[0]
        packages[name] = (section, f"{short}. {long}".strip() if long else short, source)
    counts = collections.Counter(section for section, _, _ in packages.values())
    sections = [s for s, _ in counts.most_common(CLASSES)]
    index = {s: i for i, s in enumerate(sections)}
    splits: dict[str, Split] = {k: Split([], [], []) for k in ("teacher", "transfer", "test")}
    for name in sorted(packages):
        section, text, source = packages[name]
        if section not in index:
            continue
        bucket = _bucket(source)
        key = (
            "teacher" if bucket < TEACHER else "transfer" if bucket < TEACHER + TRANSFER else "test"
        )
        splits[key].texts.append(text)
        splits[key].labels.append(index[section])
        splits[key].names.append(name)
    kept = sum(len(s.texts) for s in splits.values())
    long_note = (
        f"short + long description ({with_long:,} of {len(packages):,} packages have a long "
        f"one, from {n_files} Translation-en files)"
        if with_long
        else "SHORT DESCRIPTIONS ONLY (no Translation-en file: apt-get update -o "
        "Acquire::Languages=en fetches the long ones)"
    )
    source = (
        f"Debian package descriptions (apt-cache dumpavail: {len(packages):,} packages); "
        f"{long_note}; label: the {CLASSES} most frequent sections ({kept:,} packages, "
        f"{100 * kept / len(packages):.0f} %)"
    )
    return DebianText(sections, splits["teacher"], splits["transfer"], splits["test"], source)


def load_debian_text(cache: Path) -> DebianText:
    """The parsed set, from ``cache / "debian_text.json"`` when there, else parsed and saved."""
    path = cache / "debian_text.json"
    if path.exists():
        raw = json.loads(path.read_text())
        if raw.get("version") == CACHE_VERSION:
            teacher, transfer, test = (Split(**raw[k]) for k in ("teacher", "transfer", "test"))
            return DebianText(raw["sections"], teacher, transfer, test, raw["source"])
    data = parse()
    cache.mkdir(parents=True, exist_ok=True)
    raw = {
        "version": CACHE_VERSION,
        "sections": data.sections,
        "source": data.source,
        **{k: getattr(data, k).__dict__ for k in ("teacher", "transfer", "test")},
    }
    path.write_text(json.dumps(raw))
    return data


if __name__ == "__main__":
    from bench.service import OUT

    d = load_debian_text(OUT / "cache")
    print(d.source)
    print(d.sections)
    for k in ("teacher", "transfer", "test"):
        s = getattr(d, k)
        print(k, len(s.texts), collections.Counter(s.labels).most_common(3), s.texts[0][:200])
