"""The tree search's exit gates' names: one place builds them and one parses them back.

A gate passes a node when, on every criterion, at least k of the J judges say YES; its name is
"{k}of{J}" (the `gate` wildcard, `gate-3of5/` folders) and its DPO variant "tree_search_{k}of{J}".
"""
from __future__ import annotations

import re

_NAME = r"(\d+)of(\d+)"
GATE = re.compile(rf"^{_NAME}$")
TREE_VARIANT = re.compile(rf"^tree_search_{_NAME}$")  # the DPO variant of one gate's pairs


def gate_name(k: int, n_judges: int) -> str:
    return f"{k}of{n_judges}"


def tree_variant(k: int, n_judges: int) -> str:
    return f"tree_search_{gate_name(k, n_judges)}"


def round_number(value: str | int) -> int:
    """A self-play `round` wildcard's round: "2" and "2/chain-3of3" (gate 3of3's own chain) -> 2."""
    return int(str(value).partition("/")[0])


def chain_of(value: str | int) -> str | None:
    """A `round` wildcard's per-gate chain: "2/chain-3of3" -> "3of3"; None for round 1 and a shared chain."""
    _, _, chain = str(value).partition("/")
    return chain.removeprefix("chain-") or None


def previous_lineage(search: str | int) -> str:
    """The training lineage whose models search `search` (round r >= 2) uses: round r-1 of its chain
    ("2/chain-3of3" -> "1/chain-3of3", "3" -> "2")."""
    r, chain = round_number(search), chain_of(search)
    if r < 2:
        raise ValueError(f"round {search!r}: round 1 uses the workflow's own models")
    return f"{r - 1}/chain-{chain}" if chain else str(r - 1)


def training_name(lineage: str | int, model: str = "actor") -> str:
    """The name a self-play training gives itself in its summary (and its logs): the actor's DPO after
    lineage "1/chain-3of3" is "round-1-chain-3of3", the refiner's "round-1-chain-3of3-refiner"."""
    return f"round-{lineage}".replace("/", "-") + ("" if model == "actor" else f"-{model}")


def parse_gate(name: str) -> tuple[int, int]:
    """'3of5' -> (3, 5); anything else is a ValueError naming it."""
    m = GATE.match(name)
    if m is None:
        raise ValueError(f"not a gate name (k'of'J): {name!r}")
    return int(m[1]), int(m[2])
