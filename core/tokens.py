"""Token inputs by name (stdlib only: the API and the engine both read it).

An input's role comes from its name: ``*mask*`` is the attention mask (1 for a real token),
``*type*`` / ``*segment*`` the segment ids, anything else token ids. A token dataset may
leave out a mask (1 where the id is not 0, the padding) and segment ids (zeros), never ids.
"""

from __future__ import annotations

from collections.abc import Iterable

TOKEN_IDS = "input_ids"  # the array every token dataset holds


def role(name: str) -> str:
    """ "mask", "segment" or "ids", from an input's name."""
    lowered = name.lower()
    if "mask" in lowered:
        return "mask"
    if "type" in lowered or "segment" in lowered:
        return "segment"
    return "ids"


def missing_inputs(teacher_inputs: Iterable[str], dataset_arrays: Iterable[str]) -> list[str]:
    """The teacher's inputs a token dataset cannot supply: ids it lacks (a teacher with one
    ids input, whatever its name, reads ``input_ids``)."""
    names, have = list(teacher_inputs), set(dataset_arrays)
    ids = [name for name in names if role(name) == "ids"]
    if len(ids) == 1 and TOKEN_IDS in have:
        return []
    return [name for name in ids if name not in have]
