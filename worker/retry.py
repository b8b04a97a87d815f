"""Retry delays and the sentence of an error, for every worker loop's waits."""

from __future__ import annotations


class Backoff:
    """Exponential retry delays from 0.1 s up to a ceiling."""

    def __init__(self, ceiling: float) -> None:
        self.ceiling = ceiling
        self.delay = 0.0

    def next(self) -> float:
        self.delay = min(self.ceiling, max(0.1, self.delay * 2))
        return self.delay

    def reset(self) -> None:
        self.delay = 0.0


def sentence(error: Exception) -> str:
    """An error's text as a sentence (its type's name when it says nothing)."""
    text = str(error).strip() or type(error).__name__
    return text if text.endswith(".") else f"{text}."
