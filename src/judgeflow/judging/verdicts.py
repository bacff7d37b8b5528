"""Verdicts: the fixed answer line of judges and oracles ("Verdict: YES" / "Verdict: NO").

Parsed here, without any model or stage code, so that every stage that reads verdicts (judging,
cleaning, the oracle) shares one parser.
"""
from __future__ import annotations

import re

YES, NO, ABSTAIN = "yes", "no", "abstain"
VERDICT_PREFIX = "Verdict:"
# A line that is exactly the answer line, allowing markdown emphasis around it.
_VERDICT_LINE = re.compile(r"^[\s*_`>#-]*verdict[\s*_`]*:[\s*_`]*(yes|no)[\s*_`.!]*$", re.IGNORECASE)


def parse_verdict(text: str) -> str:
    """'yes' / 'no' from the fixed answer line, else 'abstain'.

    Only whole lines of the form "Verdict: YES" / "Verdict: NO" count. Several answer lines
    that disagree give 'abstain'. No substring guessing: "Note", "Not sure", "yes, but" and a
    quoted '"Verdict: YES"' inside a sentence are all abstain.
    """
    labels = {m.group(1).lower() for line in text.splitlines() if (m := _VERDICT_LINE.match(line))}
    return labels.pop() if len(labels) == 1 else ABSTAIN


def critique_of(text: str) -> str:
    """The judge's text without its answer line(s)."""
    return "\n".join(l for l in text.splitlines() if not _VERDICT_LINE.match(l)).strip()


def prefix_for_score(text: str) -> str:
    """Assistant text up to and including the first "Verdict:", or text + newline + "Verdict:"."""
    for m in re.finditer(r"(?im)^[\s*_`>#-]*verdict[\s*_`]*:", text):
        if _VERDICT_LINE.match(text[m.start():].splitlines()[0]):
            return text[: m.end()]
    return text.rstrip() + "\n" + VERDICT_PREFIX


def label_from_answer_start(text: str, choices: tuple[str, ...] = ("yes", "no")) -> str | None:
    """The choice a verdict that was cut right after its first token begins with ("Verdict: Y" from a
    judge that answers first in one token), or None: the start must be a prefix of exactly one choice."""
    start = text.strip().strip("*_`").lower()
    if not start:
        return None
    hits = [c for c in choices if c.startswith(start) or start.rstrip(".!") == c]
    return hits[0] if len(hits) == 1 else None


def label_with_probs(label: str, probs: dict[str, float] | None) -> tuple[str, str]:
    """(label, where it came from): the text's verdict line; where it has none, the most probable of the
    choices at the answer token (the logprobs of an openai endpoint): "text", "logprobs" or "none"."""
    if label != ABSTAIN:
        return label, "text"
    if probs:
        best = max(probs, key=probs.__getitem__)
        if sum(1 for v in probs.values() if v == probs[best]) == 1:
            return best.lower() if best.upper() in ("YES", "NO") else best.upper(), "logprobs"
    return ABSTAIN, "none"
