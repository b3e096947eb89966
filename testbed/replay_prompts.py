"""Synthetic prompts of a trace's token counts for `testbed replay`.

A prompt is a run of "units" - a space and a random lowercase letter (" q w e ...") - drawn
per request from (seed, request index), so no two prompts share a prefix (an endpoint's
prefix cache does not turn a replay into cache hits). In the BPE tokenizers of GPT-2, OPT,
Llama 3 and most others a unit is one token; in a byte-level tokenizer it is two.

How many units make N tokens, in order of preference:
- `--tokenizer PATH` (the endpoint's tokenizer, local files): units are counted with it,
  so the content has exactly N - overhead tokens;
- else probe requests (32 and 256 units, and 256 after a lead letter; max_tokens 1) read
  the endpoint's own count from `usage.prompt_tokens`: tokens = overhead + slope x units,
  fitted, plus a lead letter where that is a finer step (a byte-level tokenizer);
- else (no usage in the answers) one token per unit, said so.
The overhead (special tokens, a chat template) comes from the probes too. Every record
keeps the endpoint's own prompt count where it reports one, so a miss is visible.
"""
from __future__ import annotations

import numpy as np

LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))
PROBE_SEED = 987_654_321
# (units, with a lead letter): two sizes for the slope and overhead, one lead for a finer step
PROBES = ((32, False), (256, False), (256, True))


def units_text(seed: int, index: int, units: int, lead: bool = False) -> str:
    """`units` units (" q w e ..."), after one letter with no space when `lead` (one more
    token in a BPE, one byte in a byte-level tokenizer: a step finer than a unit there)."""
    rng = np.random.default_rng([int(seed), int(index)])
    body = " " + " ".join(LETTERS[rng.integers(0, len(LETTERS), max(int(units), 1))])
    return ("x" + body) if lead else body


def probe_text(units: int, lead: bool = False) -> str:
    return units_text(PROBE_SEED, units, units, lead)


class PromptSizer:
    """`text(i, n)`: the prompt of request i with (about) n tokens; `how` says how it is sized."""

    def __init__(self, *, seed: int = 0, slope: float = 1.0, overhead: float = 0.0, lead: float = 0.0,
                 tokenizer=None, how: str = ""):
        self.seed, self.slope, self.overhead = seed, max(float(slope), 1e-6), float(overhead)
        self.lead = float(lead) if 0 < lead < slope else 0.0      # only worth it when finer than a unit
        self.tokenizer, self.how = tokenizer, how

    def text(self, i: int, n_tokens: int) -> str:
        target = max(n_tokens - self.overhead, 1.0)
        if self.tokenizer is not None:
            return self._exact(i, int(round(target)))
        units = max(int(target // self.slope), 1)
        rest = target - units * self.slope
        lead = bool(self.lead) and rest >= self.lead / 2
        if not lead and rest > self.slope / 2:
            units += 1
        return units_text(self.seed, i, units, lead)

    def _exact(self, i: int, want: int) -> str:
        """The text closest to `want` tokens: the fewest units reaching it (binary search),
        with and without a lead letter."""
        best = None
        for lead in (False, True):
            lo, hi = 1, max(2 * want, 2)
            while self._count(i, hi, lead) < want and hi < 1 << 20:
                hi *= 2
            while lo < hi:
                mid = (lo + hi) // 2
                if self._count(i, mid, lead) < want:
                    lo = mid + 1
                else:
                    hi = mid
            for units in {lo, max(lo - 1, 1)}:
                miss = abs(self._count(i, units, lead) - want)
                if best is None or miss < best[0]:
                    best = (miss, units, lead)
        return units_text(self.seed, i, best[1], best[2])

    def _count(self, i: int, units: int, lead: bool = False) -> int:
        return content_tokens(self.tokenizer, units_text(self.seed, i, units, lead))


def content_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def fit_sizer(counts: list, *, seed: int, tokenizer=None, tokenizer_path: str = "", error: str = "") -> PromptSizer:
    """A sizer from the endpoint's usage.prompt_tokens for the PROBES texts (None where it
    gave none)."""
    (u1, _), (u2, _), _ = PROBES
    t1, t2, t3 = (list(counts) + [None] * 3)[:3]
    why = f": {error}" if error else ""
    if tokenizer is not None:
        if t2 is not None:
            overhead = t2 - content_tokens(tokenizer, probe_text(u2))
            how = f"local tokenizer {tokenizer_path}, {overhead:+d} tokens of overhead per request (a probe's usage)"
        else:
            overhead = len(tokenizer("")["input_ids"])
            how = f"local tokenizer {tokenizer_path}, {overhead:+d} special tokens (the endpoint gave no usage{why})"
        return PromptSizer(seed=seed, overhead=overhead, tokenizer=tokenizer, how=how)
    if t1 is not None and t2 is not None and t2 > t1:
        slope = (t2 - t1) / (u2 - u1)
        overhead = t1 - slope * u1
        lead = (t3 - t2) if t3 is not None else 0
        return PromptSizer(seed=seed, slope=slope, overhead=overhead, lead=lead,
                           how=f"the endpoint's usage counts (3 probes: {slope:.3g} tokens per unit, "
                               f"{overhead:+.0f} per request)")
    return PromptSizer(seed=seed, how=f"assumed 1 token per unit (the endpoint gave no usage{why}; "
                                      "pass --tokenizer for exact sizes)")
