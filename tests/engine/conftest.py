"""One torch thread per test: the machine runs other suites at the same time, and a
2-thread OpenMP job next to a busy neighbour is several times slower than 1 thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
