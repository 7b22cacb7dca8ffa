"""Seeded synthetic prompts of a requested token length, with no dataset and no tokenizer here.

Every prompt is a shuffle of the same list of common English words, so all prompts tokenize to the
same length (tokenizers split on words first) while no two share a prefix the server could cache.
How many words give the wanted length is found by asking the server: a few one-token requests
whose usage figures say how many prompt tokens (chat template included) a word count makes.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

WORDS = (
    "the of and to in is was for on that with as by at from his her they this had not are but have "
    "one all were which she there their been has more when who will would what out about some them "
    "time into only other could new very after first two also over such many then these may most "
    "made where before years through back much good well down should because each those people work "
    "state world life still same while last might great never day part long own little "
    "place right old year number way even found house water under small school light early large city "
    "point music paper river story table garden window market report letter engine summer winter "
    "morning evening answer question minute moment family friend country history system program"
).split()

INSTRUCTION = "Write a long story that uses these words:"
MAX_PROBES = 5


def word_list(count: int, seed: int) -> list[str]:
    """COUNT words drawn (seeded) from WORDS."""
    rng = random.Random(f"gpuctl-bench-words-{seed}")
    return [rng.choice(WORDS) for _ in range(count)]


def prompt_text(words: list[str], seed: int, index: int) -> str:
    """Request INDEX's prompt: the instruction and a seeded shuffle of WORDS."""
    shuffled = list(words)
    random.Random(f"gpuctl-bench-prompt-{seed}-{index}").shuffle(shuffled)
    return f"{INSTRUCTION} {' '.join(shuffled)}"


class PromptPool:
    """Distinct prompts at a few microseconds each: POOL seeded shuffles, each rotated by a different
    number of words; request i gets shuffle i mod POOL rotated by i // POOL (every prompt starts with
    another word sequence until POOL × len(WORDS) requests, and all have the same words)."""

    def __init__(self, words: list[str], seed: int, pool: int = 64) -> None:
        self.shuffles = []
        for k in range(pool):
            shuffled = list(words)
            random.Random(f"gpuctl-bench-prompt-{seed}-{k}").shuffle(shuffled)
            self.shuffles.append(shuffled)

    def text(self, index: int) -> str:
        shuffled = self.shuffles[index % len(self.shuffles)]
        turn = (index // len(self.shuffles)) % max(1, len(shuffled))
        return f"{INSTRUCTION} {' '.join(shuffled[turn:])} {' '.join(shuffled[:turn])}".rstrip()


@dataclass
class Calibration:
    """The word count chosen for the wanted prompt length, and what the server said at each probe."""

    target_tokens: int
    words: int
    probes: list[tuple[int, int]]  # (words, prompt tokens reported by the server)
    error: str | None = None

    @property
    def tokens(self) -> int | None:
        """Prompt tokens at the chosen word count, if a probe measured it."""
        return dict(self.probes).get(self.words)


Probe = Callable[[int], Awaitable[int]]  # word count → prompt tokens the server reports


async def calibrate(
    target_tokens: int, probe: Probe, max_probes: int = MAX_PROBES, context_tokens: int | None = None
) -> Calibration:
    """Find the word count whose prompt is TARGET_TOKENS long (or the closest below), in ≤ MAX_PROBES probes.

    Two probes give tokens per word and the fixed overhead (instruction, chat template); later probes
    refine by the secant through the two closest. With the model's CONTEXT_TOKENS known, the first guess
    stays within half of it, and a probe the server refuses as too long (HTTP 400) is retried with half the
    words. Any other failing probe ends calibration with its error and a guess of one token per word.
    """
    cal = Calibration(target_tokens, max(1, target_tokens), [])
    guess = max(1, target_tokens if context_tokens is None else min(target_tokens, context_tokens // 2))
    try:
        for _ in range(max_probes):
            try:
                tokens = await probe(guess)
            except ProbeError as exc:
                too_long = str(exc).startswith("HTTP 400") and ("context" in str(exc) or "input tokens" in str(exc))
                if context_tokens is None or not too_long or guess <= 1:
                    raise
                guess //= 2  # too long for the context: halve and try again
                continue
            cal.probes.append((guess, tokens))
            if tokens == target_tokens:
                break
            guess = next_guess(cal.probes, target_tokens)
            if guess in dict(cal.probes):
                break
    except ProbeError as exc:
        cal.error = str(exc)
        return cal
    if not cal.probes:
        cal.error = "every probe was too long for the model's context"
        return cal
    cal.words = best(cal.probes, target_tokens)
    return cal


def next_guess(probes: list[tuple[int, int]], target: int) -> int:
    """The next word count to try: the secant through the two probes closest to TARGET, or the closest
    probe's neighbour on TARGET's side when the secant lands on a word count already tried."""
    if len(probes) == 1:
        words, tokens = probes[0]
        return max(1, words // 2 if tokens != target else words)
    (w1, t1), (w2, t2) = sorted(probes, key=lambda p: abs(p[1] - target))[:2]
    guess = w1 + (1 if t1 < target else -1)
    if t1 != t2 and w1 != w2:
        guess = round(w1 + (target - t1) * (w1 - w2) / (t1 - t2))
    if guess in dict(probes):
        guess = w1 + (1 if t1 < target else -1)
    return max(1, guess)


def best(probes: list[tuple[int, int]], target: int) -> int:
    """The probed word count closest to TARGET tokens (preferring one not above it)."""
    return min(probes, key=lambda p: (abs(p[1] - target), p[1] > target))[0]


class ProbeError(Exception):
    """A calibration request failed (its message is shown as a warning)."""
