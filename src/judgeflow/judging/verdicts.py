"""Verdicts: the fixed answer line of judges and oracles ("Verdict: YES" / "Verdict: NO").

Parsed here, without any model or stage code, so that every stage that reads verdicts (judging,
cleaning, the oracle) shares one parser; and counted here: J (the verdicts per criterion of k-of-J, a
sampled judge's samples each one of them), the share of YES with abstains dropped or counted as NO
(`judging.abstain`), and which samples of a sampled judge are drawn again (SPaR's judging mode).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal, get_args

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


# ---------------------------------------------------------------- k-of-J columns, abstains, redraws
# J, the verdicts per criterion that k-of-J counts, is not len(judging.judges): a judge sampled n times
# (`samples: n`, SPaR's judging mode) gives n of them. Every place that counts J or names the verdict
# columns (gate names f"{k}of{J}", draws' verdict matrices, Best-of-N's sub-panels, quality tables) reads
# these two helpers; they take the `judging` section (judgeflow.workflow.settings.Judging) or a stage's view
# of it, reading `judging.judges[*].id` and `judging.judges[*].samples` only.
SAMPLE_SEP = "#"  # never in a judge id (settings.ID_PATTERN), so `<id>#<s>` can clash with no judge's id
AbstainMode = Literal["drop", "no"]  # judging.abstain
ABSTAIN_MODES: tuple[str, ...] = get_args(AbstainMode)


def sample_verdict_id(judge_id: str, sample: int, samples: int) -> str:
    """The verdict column of sample `sample` (1-based) of a judge sampled `samples` times: the judge's own
    id when it is sampled once, else `<id>#<sample>` (each sample is one of the J of k-of-J)."""
    return judge_id if samples == 1 else f"{judge_id}{SAMPLE_SEP}{sample}"


def verdict_ids(judging: Any) -> list[str]:
    """The J verdict columns of k-of-J, in judging.judges order: each judge's id, a judge with `samples: n`
    (n > 1) as its n samples `<id>#1` ... `<id>#n`. A verdict record's `judge_id` is one of these."""
    return [sample_verdict_id(j.id, s, j.samples) for j in judging.judges for s in range(1, j.samples + 1)]


def n_verdicts(judging: Any) -> int:
    """J: the verdicts per criterion k-of-J counts (the J of the gate names f"{k}of{J}")."""
    return sum(j.samples for j in judging.judges)


def spar_mode(judge: Any) -> bool:
    """Is this judge spec (judging.judges[i]) in SPaR's judging mode: sampled several times, or holistic?"""
    return judge.samples > 1 or bool(judge.holistic)


def abstain_mode(judging: Any, unset: bool = False) -> AbstainMode:
    """judging.abstain (`unset`: the config does not set it): `drop` where a judge is in SPaR's mode (its
    value leaves parse failures out, thu-coai/SPaR src/models/get_response.py:127), else `no` (an abstain
    counts as a NO, as before). Validated settings have it set, so stages read it as it is."""
    if not unset:
        if judging.abstain not in ABSTAIN_MODES:
            raise ValueError(f"judging.abstain: {judging.abstain!r} is not one of {list(ABSTAIN_MODES)}")
        return judging.abstain
    return "drop" if any(spar_mode(j) for j in judging.judges) else "no"


def yes_share(labels: Iterable[str], abstain: str) -> float | None:
    """The share of YES among verdict labels: abstain `drop`, YES / (YES + NO) (SPaR's value,
    get_response.py:127: `acc.count(1) / (acc.count(0) + acc.count(1))`, parse failures left out); `no`,
    YES / all (an abstain counts as a NO). None where nothing is counted (no verdict; with `drop`, only
    abstains)."""
    if abstain not in ABSTAIN_MODES:
        raise ValueError(f"judging.abstain: {abstain!r} is not one of {list(ABSTAIN_MODES)}")
    labels = list(labels)
    yes, no = labels.count(YES), labels.count(NO)
    n = yes + no if abstain == "drop" else len(labels)
    return round(yes / n, 6) if n else None


def to_redraw(labels: list[str], resample: Iterable[str]) -> list[int]:
    """Which of one judge's samples (their labels, on one criterion, or on the whole response when holistic)
    are drawn again, by `judging.judges[i].resample`:

    * `tie`: as many YES as NO (abstains aside; all abstain is 0 = 0, a tie too): every sample anew, as SPaR
      does: thu-coai/SPaR src/models/get_response.py:110-113 (commit 6497aba), in `get_value`,
      `if acc.count(0) == acc.count(1): critique = []; acc = []; continue` (all n judgments dropped, all
      n drawn again);
    * `abstain` (not SPaR's: it drops parse failures, get_response.py:127): each sample without a verdict.

    A tie wins where both apply. [] where nothing is redrawn."""
    modes = set(resample)
    if "tie" in modes and labels.count(YES) == labels.count(NO):
        return list(range(len(labels)))
    if "abstain" in modes:
        return [i for i, label in enumerate(labels) if label == ABSTAIN]
    return []
