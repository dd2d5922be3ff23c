"""Checks on each generated definition: an invalid answer is kept with its reason, and left out
of training by default."""

from __future__ import annotations

import re

# In the order they are checked; the first that applies is the reason.
REASONS = ("empty", "truncated", "refusal", "repeats_prompt", "too_short", "off_topic")

_REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i apologi[sz]e|i can(?:'|no)t|i am unable|i'm unable|"
    r"as an ai|as a language model|i do not have|i don't have (?:enough )?information)\b",
    re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was "
    "which with disease disorder syndrome type other not".split())


def words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def content_stems(texts: list[str]) -> set[str]:
    """First five letters of each content word: "renal" matches "renal", "kidneys" "kidney"."""
    return {w[:5] for t in texts for w in words(t) if len(w) >= 4 and w not in _STOPWORDS}


def check(text: str, finish_reason: str, prompt: str, concept_terms: list[str],
          min_words: int = 5) -> str:
    """The reason an answer is invalid, or "" when it is a usable definition.

    ``concept_terms``: the concept's name, synonyms and the names of its related concepts;
    a definition must mention at least one of their content words.
    """
    answer = text.strip()
    if not answer:
        return "empty"
    if finish_reason == "length":
        return "truncated"
    if _REFUSAL.search(answer):
        return "refusal"
    if _repeats(answer, prompt):
        return "repeats_prompt"
    if len(words(answer)) < min_words:
        return "too_short"
    stems = content_stems(concept_terms)
    if stems and not stems & {w[:5] for w in words(answer)}:
        return "off_topic"
    return ""


def _repeats(answer: str, prompt: str, n: int = 6, share: float = 0.5) -> bool:
    """Half or more of the answer's 6-word sequences appear verbatim in the prompt."""
    answer_words, prompt_words = words(answer), words(prompt)
    grams = [tuple(answer_words[i:i + n]) for i in range(len(answer_words) - n + 1)]
    if not grams:
        return False
    seen = {tuple(prompt_words[i:i + n]) for i in range(len(prompt_words) - n + 1)}
    return sum(g in seen for g in grams) / len(grams) >= share
