"""What a data scientist writes: a class with `score`, and optionally `learn` and `health`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fogline.sdk.contract import Reading


class Model:
    """Subclass and override `score`. A stateful model keeps what it learns between calls (the
    companion sends it the stream, in order, one call at a time); a stateless one is given
    self-contained batches, possibly several at once."""

    def score(self, readings: list[Reading]) -> list[Any]:
        raise NotImplementedError("a model must implement score(readings)")

    def score_window(self, readings: list[Reading], window: dict[str, int]) -> list[Any]:
        """A TIME_WINDOW call: the window's readings in time order, and the window itself,
        {"start": ms, "end": ms} on the readings' own time. Override to use the window; by
        default `score(readings)`."""
        return self.score(readings)

    def learn(self, readings: list[Reading], labels: list[Any] | None = None) -> None:
        """Optional: learn from labelled (or unlabelled) readings sent to POST /learn."""
        raise NotImplementedError("this model does not learn")

    def health(self) -> bool | dict[str, Any]:
        """Optional: False (or {"status": "…"} other than "ok") marks the model unhealthy."""
        return True


class FunctionModel(Model):
    def __init__(
        self,
        score: Callable[[list[Reading]], list[Any]],
        learn: Callable[[list[Reading], list[Any] | None], None] | None = None,
        health: Callable[[], bool | dict[str, Any]] | None = None,
    ) -> None:
        self._score = score
        self._learn = learn
        self._health = health

    def score(self, readings: list[Reading]) -> list[Any]:
        return self._score(readings)

    def learn(self, readings: list[Reading], labels: list[Any] | None = None) -> None:
        if self._learn is None:
            super().learn(readings, labels)
        else:
            self._learn(readings, labels)

    def health(self) -> bool | dict[str, Any]:
        return True if self._health is None else self._health()
