"""Dynamic stopping: when has an image been shown often enough? Pure, so it is unit-tested.

Why: averaging repetitions makes a decision surer, but each repetition costs time. The policy
stops an image as soon as the engine's accumulated top-1 posterior reaches ``threshold``, or at
``max_repetitions`` whatever the posterior. :class:`ActiveQueue` interleaves images while their
results are on the way (RSVP with a set of active images, as in the dynamic-stopping
literature), so the screen never waits for the decoder.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

DEFAULT_THRESHOLD = 0.9
DEFAULT_MAX_REPETITIONS = 4

Reason = Literal["threshold", "max_repetitions", "below_threshold", "uncalibrated", "timeout",
                 "aborted"]


def posterior_of(result: Any) -> float | None:
    """The top-1 posterior of a result (a :class:`~neuralign.realtime.decisions.Result` or its
    dict): ``avg_topk_probs[0]`` (over the repetitions so far), else ``topk_probs[0]`` (the first
    presentation), else None (a bundle without calibration)."""
    get = result.get if isinstance(result, Mapping) else (lambda k: getattr(result, k, None))
    for key in ("avg_topk_probs", "topk_probs"):
        probs = get(key)
        if probs:
            p = probs[0]
            if p is not None and math.isfinite(float(p)):
                return float(p)
    return None


@dataclass(frozen=True)
class StopDecision:
    """The outcome of one presentation's result (or its timeout)."""

    decision: Literal["stop", "continue"]
    reason: Reason
    posterior: float | None
    n_repetitions: int  # presentations of this image so far, the decided one included


@dataclass(frozen=True)
class StoppingPolicy:
    """Stop at ``posterior >= threshold`` or at ``max_repetitions``; a missing posterior
    (timeout, no calibration) continues until the maximum."""

    threshold: float = DEFAULT_THRESHOLD
    max_repetitions: int = DEFAULT_MAX_REPETITIONS

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.max_repetitions < 1:
            raise ValueError(f"max_repetitions must be >= 1, got {self.max_repetitions}")

    def decide(self, posterior: float | None, n_repetitions: int,
               timed_out: bool = False) -> StopDecision:
        if posterior is not None and posterior >= self.threshold:
            return StopDecision("stop", "threshold", posterior, n_repetitions)
        if n_repetitions >= self.max_repetitions:
            return StopDecision("stop", "max_repetitions", posterior, n_repetitions)
        reason: Reason = ("timeout" if timed_out else
                          "uncalibrated" if posterior is None else "below_threshold")
        return StopDecision("continue", reason, posterior, n_repetitions)


@dataclass
class _Image:
    image_id: str
    shown: int = 0
    pending_stamp: float | None = None  # marker stamp of the presentation awaiting its result
    pending_index: int | None = None  # its presentation index
    deadline: float | None = None
    stamps: list[float] = field(default_factory=list)
    done: bool = False


@dataclass(frozen=True)
class Decided:
    """A decision about presentation ``index`` of ``image_id``."""

    index: int
    image_id: str
    decision: StopDecision


class ActiveQueue:
    """Which image to show next in closed loop: images enter in sequence order, at most
    ``max_active`` at once; an image is shown again only once the result of its latest
    presentation said "continue" (or timed out), and never right after itself while another
    image can be shown.

    Times are the caller's clock (LSL seconds); nothing here reads a clock.
    """

    def __init__(self, image_ids: list[str], policy: StoppingPolicy, timeout_s: float = 3.0,
                 max_active: int = 8):
        if max_active < 1:
            raise ValueError(f"max_active must be >= 1, got {max_active}")
        self.policy, self.timeout_s, self.max_active = policy, timeout_s, max_active
        self._waiting: deque[str] = deque(image_ids)  # not yet admitted
        self._images: dict[str, _Image] = {}
        self._ready: deque[str] = deque()  # admitted, not pending, not done: FIFO
        self.late_results = 0  # results for a presentation already timed out

    @property
    def n_active(self) -> int:
        return sum(not im.done for im in self._images.values())

    @property
    def finished(self) -> bool:
        """Every image admitted and stopped."""
        return not self._waiting and all(im.done for im in self._images.values())

    def next_image(self, last: str | None) -> str | None:
        """The image to show next (None: every active image awaits its result)."""
        for image_id in self._ready:
            if image_id != last:
                self._ready.remove(image_id)
                return image_id
        if self._waiting and self.n_active < self.max_active:
            image_id = self._waiting.popleft()
            self._images[image_id] = _Image(image_id)
            return image_id
        if self._ready:  # only the last-shown image can be shown: better than a blank
            return self._ready.popleft()
        return None

    def shown(self, image_id: str, index: int, stamp: float) -> int:
        """Presentation ``index`` of ``image_id`` went out with marker ``stamp``: its
        repetition count."""
        im = self._images[image_id]
        im.shown += 1
        im.pending_stamp, im.pending_index = stamp, index
        im.deadline = stamp + self.timeout_s
        im.stamps.append(stamp)
        return im.shown

    def result(self, image_id: str | None, marker_stamp: float,
               posterior: float | None) -> Decided | None:
        """A result arrived: the decision when it answers an image's latest presentation
        (matched by image id and the nearest marker stamp), else None (an unknown image or a
        late result of an earlier presentation)."""
        im = self._images.get(image_id) if image_id is not None else None
        if im is None or im.pending_stamp is None:
            if im is not None:
                self.late_results += 1
            return None
        nearest = min(im.stamps, key=lambda s: abs(s - marker_stamp))
        if nearest != im.pending_stamp:
            self.late_results += 1
            return None
        return self._decide(im, self.policy.decide(posterior, im.shown))

    def expire(self, now: float) -> list[Decided]:
        """Decisions for presentations whose result did not come within the timeout."""
        return [self._decide(im, self.policy.decide(None, im.shown, timed_out=True))
                for im in list(self._images.values())
                if im.pending_stamp is not None and im.deadline is not None and now >= im.deadline]

    def pending(self) -> list[tuple[int, str]]:
        """(presentation index, image id) of every presentation awaiting its result."""
        return [(im.pending_index, im.image_id) for im in self._images.values()
                if im.pending_index is not None]

    def _decide(self, im: _Image, d: StopDecision) -> Decided:
        out = Decided(im.pending_index if im.pending_index is not None else -1, im.image_id, d)
        im.pending_stamp = im.pending_index = im.deadline = None
        if d.decision == "stop":
            im.done = True
        else:
            self._ready.append(im.image_id)
        return out
