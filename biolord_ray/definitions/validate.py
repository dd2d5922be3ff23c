"""Checks on each generated definition: an invalid answer is kept with its reason, and left out
of training by default."""

from __future__ import annotations

import re

# In the order they are checked; the first that applies is the reason.
# "engine_error": the request failed in the engine (no answer to check).
REASONS = ("empty", "truncated", "refusal", "repeats_prompt", "too_short", "off_topic",
           "vacuous", "engine_error")
# Bump when ``check`` changes: it is part of the stage's settings, so a run directory
# re-checks its stored answers (without generating them again) under the new gate.
GATE_VERSION = 2

_REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i apologi[sz]e|i can(?:'|no)t|i am unable|i'm unable|"
    r"as an ai|as a language model|i do not have|i don't have (?:enough )?information)\b",
    re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was "
    "which with disease disorder syndrome type other not".split())


# "vacuous": the answer never says what the concept is. A definition predicates a kind or a
# defining description of its concept; filler only says that the concept exists, matters or
# has been studied ("... are medical concepts that have been extensively researched"). An
# answer is vacuous when none of its sentences defines, in one of these ways:
#
# 1. A definitional verb: "refers to", "denotes", "is defined as", "characterized by", "in
#    which".
_DEFINING_VERB = re.compile(
    r"\b(?:refers?|referring)\s+to\b|\b(?:denotes?|describes?|means)\b|\bdefined\s+as\b|"
    r"\b(?:characteri[sz]ed|marked)\s+by\b|\b(?:in|during)\s+which\b", re.IGNORECASE)
# 2. A copula with a complement, "X is a ...", "X are rare ...", an adverb allowed between
#    ("is typically a ...", "are often ..."), unless the complement only says that the
#    concept is known, studied or important, where it is found or what causes it ...
_COPULA = re.compile(r"\b(?:is|are)\s+(?:(?:\w+ly|often|also|still|sometimes|always)\s+)?(\w+)",
                     re.IGNORECASE)
_NOT_A_KIND = frozenset(
    "known called termed named not studied researched investigated discussed debated "
    "misunderstood understood recognized recognised considered thought believed important "
    "essential crucial vital significant interesting associated linked related caused found "
    "seen observed present being".split())
#    ... or names no kind but "concept" or "term": "X is a medical term" defines nothing
#    unless it goes on to say what the term refers to.
_META_KIND = re.compile(
    r"\b(?:is|are)\s+(?:\S+\s+){0,4}?(?:concepts?|(?<![-\w])terms?|terminology|topics?|"
    r"notions?)\b(?!.*\b(?:refers?|referring|describ\w*|denot\w*|means?|used\s+to|for\s+an?)\b)",
    re.IGNORECASE)
# 3. Dictionary style. An apposition anywhere ("X, a rare disorder of ..."); in the first
#    sentence "Term: a description", a leading article ("An inherited disorder of ...") or a
#    bare noun phrase, without any auxiliary verb ("Involuntary urination during sleep.":
#    filler needs a verb, "has been studied").
_APPOSITION = re.compile(r",\s+an?\s", re.IGNORECASE)
_DICTIONARY_OPENING = re.compile(r"^[^:.]{1,150}:\s*\w|^(?:an?|any)\s", re.IGNORECASE)
_AUXILIARY = re.compile(r"\b(?:is|are|was|were|be|been|being|has|have|had|do|does|did|can|"
                        r"could|may|might|will|would|shall|should|must)\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


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
    if not _says_what_it_is(answer):
        return "vacuous"
    return ""


def _says_what_it_is(answer: str) -> bool:
    """Whether a sentence of the answer defines (see the patterns above "vacuous")."""
    sentences = [s.strip().strip('"\'') for s in _SENTENCE_END.split(answer)]
    first = sentences[0]
    if _DICTIONARY_OPENING.search(first) or not _AUXILIARY.search(first):
        return True
    for sentence in sentences:
        if _DEFINING_VERB.search(sentence) or _APPOSITION.search(sentence):
            return True
        kinds = (m for m in _COPULA.finditer(sentence) if m.group(1).casefold() not in _NOT_A_KIND)
        if any(not _META_KIND.match(sentence, m.start()) for m in kinds):
            return True
    return False


def _repeats(answer: str, prompt: str, n: int = 6, share: float = 0.5) -> bool:
    """Half or more of the answer's 6-word sequences appear verbatim in the prompt."""
    answer_words, prompt_words = words(answer), words(prompt)
    grams = [tuple(answer_words[i:i + n]) for i in range(len(answer_words) - n + 1)]
    if not grams:
        return False
    seen = {tuple(prompt_words[i:i + n]) for i in range(len(prompt_words) - n + 1)}
    return sum(g in seen for g in grams) / len(grams) >= share
