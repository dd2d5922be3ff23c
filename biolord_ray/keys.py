"""Keys shared by the stages: a seeded draw per concept or text (the same on every worker,
machine and rerun: Python's ``hash`` is salted per process), and a name's normal form."""

from __future__ import annotations

import hashlib
import re


def draw(seed: int, *parts: str) -> float:
    """A uniform number in [0, 1) fixed by the seed and ``parts`` (concept, text, ...)."""
    digest = hashlib.blake2b("\x1f".join([str(seed), *parts]).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2.0**64


def normalise(text: str) -> str:
    """Names with the same words in any order and case ("enuresis, nocturnal" and "Nocturnal
    enuresis") are one name here: holding out one of them would test nothing."""
    return " ".join(sorted(re.findall(r"\w+", text.casefold())))
