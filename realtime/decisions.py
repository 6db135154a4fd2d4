"""What the engine decides about each epoch, and the one schema every consumer reads it in.

:class:`Result` IS the schema of the result stream: the engine publishes ``Result.to_json()`` as
one string sample per decoded epoch on LSL (type ``NeuralignResults``), appends the object to
``engine.results``, hands it to the viewer and writes ``Result.to_dict()`` to ``results.jsonl``.
Any LSL client reads the JSON object ``{epoch_id, marker, marker_timestamp,
last_sample_timestamp, n_repetitions, topk_ids, topk_scores[, topk_probs][, avg_topk_ids,
avg_topk_scores[, avg_topk_probs]], stages_ms[, stream][, flags][, health]}``: ``avg_*`` only
from an image's second presentation on, ``*_probs`` only from a bundle with a calibration
section, ``stream`` only from an engine with several sources, ``flags`` only when not empty
(e.g. ``"bad_samples"``), ``health`` (the engine's counters at publication) only while the
result carries it.

Probabilities (calibrated bundles): ``topk_probs`` is the single-trial ``softmax(score / T)``
over the whole template bank, at each top-k id; ``avg_topk_probs`` the posterior of the
repetition decision itself, the running average of the image's ``r`` presentations:
``softmax(avg score / T_r)`` over the bank with the bundle's temperature for ``r`` repetitions
(averaged epochs score sharper than single trials). Both follow their ids' order, so
``avg_topk_probs[0]`` is the maximum posterior (what dynamic stopping reads).

:class:`ResultBuilder` turns a batch of epochs into results: the single-trial decision and,
through a :class:`RepetitionStore`, the decision on the running average of all presentations of
the same image. :class:`RunningAccuracy` scores results against the truth once, for every
consumer (the rehearsal session and the viewer).
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from neuralign.bundle import repetition_temperature
from neuralign.itr import bits_per_minute, wolpaw_bits

if TYPE_CHECKING:
    from neuralign.realtime.epocher import Epoch
    from neuralign.realtime.inference import Decoded, Decoder

#: digits kept of each similarity score on the wire
SCORE_DIGITS = 6


@dataclass
class Result:
    """One decoded epoch. Field order is the key order of the JSON on the wire, but for
    ``topk_probs`` / ``avg_topk_probs`` (last, so positional construction is unchanged), which
    follow their scores there."""

    epoch_id: int
    marker: str | None  # the image id of the marker; None in sliding-window mode
    marker_timestamp: float  # LSL time of the stimulus onset (or the window start)
    last_sample_timestamp: float  # LSL time of the last input sample the epoch needed
    n_repetitions: int  # presentations of this image so far, this one included
    topk_ids: list[str]
    topk_scores: list[float]
    avg_topk_ids: list[str] | None = None  # decision on the average of the repetitions so far
    avg_topk_scores: list[float] | None = None
    stages_ms: dict[str, float] = field(default_factory=dict)  # latency.STAGES durations
    stream: str | None = None  # input stream of an engine with several sources (else absent)
    flags: list[str] = field(default_factory=list)  # e.g. "bad_samples" (absent when empty)
    health: dict[str, Any] | None = None  # the engine's health counters at publication
    topk_probs: list[float] | None = None  # calibrated p of each top-k id (single trial)
    avg_topk_probs: list[float] | None = None  # accumulated posterior of each avg_topk id

    def to_dict(self) -> dict[str, Any]:
        """The wire form (``avg_*`` keys only when there is an average)."""
        return finite_json(self._wire())

    def _wire(self) -> dict[str, Any]:
        """:meth:`to_dict` before non-finite numbers are replaced."""
        d: dict[str, Any] = {
            "epoch_id": self.epoch_id, "marker": self.marker,
            "marker_timestamp": self.marker_timestamp,
            "last_sample_timestamp": self.last_sample_timestamp,
            "n_repetitions": self.n_repetitions, "topk_ids": list(self.topk_ids),
            "topk_scores": list(self.topk_scores)}
        if self.topk_probs is not None:  # calibrated bundles only: older readers see no change
            d["topk_probs"] = list(self.topk_probs)
        if self.avg_topk_ids is not None:
            d["avg_topk_ids"] = list(self.avg_topk_ids)
            d["avg_topk_scores"] = list(self.avg_topk_scores or [])
            if self.avg_topk_probs is not None:
                d["avg_topk_probs"] = list(self.avg_topk_probs)
        d["stages_ms"] = dict(self.stages_ms)
        if self.stream is not None:  # only multi-stream engines: older readers see no change
            d["stream"] = self.stream
        if self.flags:
            d["flags"] = list(self.flags)
        if self.health is not None:
            d["health"] = dict(self.health)
        return d

    def to_json(self) -> str:
        """Strict JSON (no bare NaN/Infinity, which strict clients reject). Walking the result
        for non-finite numbers only when the encoder finds one keeps the common case off that
        walk (~20 us of each publication)."""
        d = self._wire()
        try:
            return json.dumps(d, allow_nan=False)
        except ValueError:  # a NaN or infinity somewhere: null on the wire
            return json.dumps(finite_json(d), allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        """Inverse of :meth:`to_dict`; ValueError naming the missing key. Unknown keys are
        ignored, so a reader keeps working when a newer engine adds fields. A null score (a
        non-finite one on the strict wire) reads back as NaN: the result is still a result."""
        avg_scores = d.get("avg_topk_scores")
        probs, avg_probs = d.get("topk_probs"), d.get("avg_topk_probs")
        try:
            return cls(epoch_id=int(d["epoch_id"]), marker=d["marker"],
                       marker_timestamp=_num(d["marker_timestamp"]),
                       last_sample_timestamp=_num(d["last_sample_timestamp"]),
                       n_repetitions=int(d["n_repetitions"]), topk_ids=list(d["topk_ids"]),
                       topk_scores=[_num(s) for s in d["topk_scores"]],
                       avg_topk_ids=d.get("avg_topk_ids"),
                       avg_topk_scores=(None if avg_scores is None
                                        else [_num(s) for s in avg_scores]),
                       stages_ms=dict(d.get("stages_ms") or {}), stream=d.get("stream"),
                       flags=list(d.get("flags") or []), health=d.get("health"),
                       topk_probs=None if probs is None else [_num(p) for p in probs],
                       avg_topk_probs=(None if avg_probs is None
                                       else [_num(p) for p in avg_probs]))
        except KeyError as err:
            raise ValueError(f"not a neuralign result: no key {err.args[0]!r}") from None

    @classmethod
    def from_json(cls, text: str) -> Result:
        """Parse one result sample; ValueError when it is not JSON or not a result."""
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError(f"not a neuralign result: {text[:80]!r}")
        return cls.from_dict(d)

    def summary(self, k: int = 3) -> str:
        """One human-readable line (what ``neuralign run --verbose-results`` prints)."""
        return f"epoch {self.epoch_id} {self.marker}: top-{k} {self.topk_ids[:k]}"



@dataclass
class Reconstruction:
    """The model's reconstruction of masked channels of one epoch (what the viewer plots)."""

    epoch_id: int
    channels: list[int]  # bundle channel indices
    original: np.ndarray  # (len(channels), T) the normalised epoch's rows
    reconstructed: np.ndarray  # (len(channels), T) the same rows filled in from the others


@dataclass
class Generated:
    """The bundle generator's image of one decoded epoch (from its single-trial embedding)."""

    epoch_id: int
    marker: str | None  # the epoch's image id (the truth to compare with), None when sliding
    image: np.ndarray  # (S, S) or (S, S, 3) float32 in [0, 1]


def _num(v: Any) -> float:
    """A wire number: null (a non-finite value on the strict wire) reads back as NaN."""
    return float("nan") if v is None else float(v)


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (a result is strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


class RepetitionStore:
    """Running sum and count of the epochs of each image: repeated presentations of an image
    are averaged into a running decision (noise shrinks with the square root of the count).

    At most ``max_labels`` images are kept (the least recently presented is forgotten): a
    marker stream of ever-new labels cannot grow memory without bound.
    """

    def __init__(self, max_labels: int = 4096) -> None:
        self.max_labels = max_labels
        self._sum: OrderedDict[str, np.ndarray] = OrderedDict()
        self._n: dict[str, int] = {}
        self._lock = threading.Lock()  # add (inference thread) vs peek (processing thread)

    def __len__(self) -> int:
        return len(self._sum)

    def add(self, label: str, data: np.ndarray) -> tuple[int, np.ndarray | None]:
        """Fold one epoch of ``label`` in: (presentations so far, their average from the
        second one on, else None)."""
        with self._lock:
            s = self._sum.get(label)
            self._sum[label] = data.astype(np.float64) if s is None else s + data
            self._sum.move_to_end(label)
            while len(self._sum) > self.max_labels:
                old, _ = self._sum.popitem(last=False)
                self._n.pop(old, None)
            n = self._n[label] = self._n.get(label, 0) + 1
            total = self._sum[label]
        return n, average(total, n) if n >= 2 else None

    def peek(self, label: str) -> tuple[int, np.ndarray | None]:
        """(presentations so far, the sum of their epochs; None before the first): what
        :meth:`add` would fold the next one into. The sum is never changed in place."""
        with self._lock:
            return self._n.get(label, 0), self._sum.get(label)

    def count(self, label: str) -> int:
        return self._n.get(label, 0)


def average(total: np.ndarray, n: int) -> np.ndarray:
    """The average epoch of ``n`` presentations from their (float64) sum, as the model reads it:
    the one formula for the whole epoch and for its first samples (early encoding)."""
    return (total / n).astype(np.float32)


class ResultBuilder:
    """Epochs -> :class:`Result`: single-trial top-k and, for a repeated image, the top-k of its
    running average; every epoch of a batch and every average decoded by one decoder call.

    ``missing``: bundle channels the stream lacks (``--fill-missing``); the model reconstructs
    them in each epoch before anything else sees it.

    ``temperature`` (default: the decoder's, from the bundle's calibration section) and
    ``repetition_temperatures`` (``T_r`` of the average of ``r`` presentations; beyond the list
    its last; default the decoder's, else ``T``): with them every result carries calibrated
    probabilities: a softmax over the bank of the scores the decoder computed for its top-k
    (:attr:`Decoded.scores`), one per batch, the averaged epochs' rows included; without (older
    bundles) none.
    """

    def __init__(self, decoder: Decoder, missing: Sequence[int] = (),
                 max_repetition_images: int | None = None, temperature: float | None = None,
                 repetition_temperatures: Sequence[float] | None = None):
        self.decoder = decoder
        self.missing = np.asarray(missing, dtype=np.int64)
        # every template image fits; beyond it (realtime.decode_markers: all) the oldest are
        # forgotten
        template_ids = list(getattr(decoder, "template_ids", ()))
        n_labels = max_repetition_images or max(1024, len(template_ids))
        self.repetitions = RepetitionStore(n_labels)
        self.last_embeddings: list[np.ndarray] = []  # of the last build(), in batch order
        t = temperature if temperature is not None else getattr(decoder, "temperature", None)
        self.temperature: float | None = None
        if t is not None and len(template_ids):
            self.temperature = float(t)
            ts = (repetition_temperatures if repetition_temperatures is not None
                  else getattr(decoder, "repetition_temperatures", None))
            self._repetition_temperatures = list(ts) if ts else None
            self._index = {img: i for i, img in enumerate(template_ids)}

    def build(self, batch: Sequence[Epoch]) -> list[Result]:
        """Results of ``batch``, in order (``stages_ms`` is left for the engine to fill)."""
        items: list[np.ndarray] = []
        parts: list[tuple[int, np.ndarray] | None] = []
        counts: list[int] = []
        for ep in batch:
            if len(self.missing):
                ep.data[self.missing] = self.decoder.reconstruct(
                    ep.data, self.missing.tolist())[self.missing]
            items.append(ep.data)
            early = ep.early
            parts.append(None if early is None else (early.n_frames, early.acc[0]))
            key = repetition_key(ep.label, ep.stream)
            n, avg = (1, None) if key is None else self.repetitions.add(key, ep.data)
            counts.append(n)
            if avg is not None:
                items.append(avg)
                # the early average row holds if it assumed exactly the presentations before
                parts.append((early.n_frames, early.acc[1]) if early is not None
                             and early.n_before == n - 1 else None)
        any_early = any(p is not None for p in parts)
        decoded = iter(self.decoder.decode_all(items, parts) if any_early
                       else self.decoder.decode_all(items))
        out = []
        self.last_embeddings = []  # the batch's single-trial embeddings (the generator's input)
        pairs = []
        for n in counts:
            single = next(decoded)
            self.last_embeddings.append(single.embedding)
            pairs.append((single, next(decoded) if n >= 2 else None))
        log_post = self._log_posteriors(pairs, counts) if self.temperature is not None else None
        n_avg = 0
        for i, (ep, n_rep, (single, avg_dec)) in enumerate(zip(batch, counts, pairs)):
            probs = avg_probs = None
            if log_post is not None:
                probs = self._probs(log_post[i], single.topk_ids)
                if avg_dec is not None:  # the averaged epochs' rows follow the single trials
                    avg_probs = self._probs(log_post[len(pairs) + n_avg], avg_dec.topk_ids)
                    n_avg += 1
            out.append(Result(
                epoch_id=ep.epoch_id, marker=ep.label, marker_timestamp=ep.onset_timestamp,
                last_sample_timestamp=ep.last_sample_timestamp, n_repetitions=n_rep,
                topk_ids=single.topk_ids, topk_scores=_rounded(single),
                avg_topk_ids=None if avg_dec is None else avg_dec.topk_ids,
                avg_topk_scores=None if avg_dec is None else _rounded(avg_dec), stream=ep.stream,
                flags=list(ep.flags), topk_probs=probs, avg_topk_probs=avg_probs))
        return out

    def _log_posteriors(self, pairs: list[tuple[Decoded, Decoded | None]],
                        counts: list[int]) -> np.ndarray | None:
        """One row per single trial (at ``T``), then one per averaged epoch in batch order (at
        ``T_r`` of its repetition count): one softmax for the batch, over the bank scores the
        decoder already computed."""
        if not pairs:
            return None
        rows = [single.scores for single, _ in pairs]
        temps = [self.temperature] * len(pairs)
        ts = self._repetition_temperatures
        for (_, avg_dec), r in zip(pairs, counts):
            if avg_dec is not None:
                rows.append(avg_dec.scores)
                temps.append(repetition_temperature(ts, r) if ts else self.temperature)
        if any(row is None for row in rows):
            raise ValueError("calibrated results need every template's score: the decoder "
                             "returned none (Decoder.keep_scores is off)")
        scores = np.asarray(rows, np.float32)
        x = scores / np.asarray(temps, np.float32)[:, None]
        x -= x.max(axis=1, keepdims=True)  # scipy's log_softmax in two numpy lines: it spent
        x -= np.log(np.exp(x).sum(axis=1, keepdims=True))  # ~60 us of Python per batch
        return x

    def _probs(self, log_post: np.ndarray, ids: Sequence[str]) -> list[float]:
        """The posterior at ``ids`` (rounded for the wire)."""
        idx = [self._index[i] for i in ids]
        return [round(float(p), SCORE_DIGITS) for p in np.exp(log_post[idx])]

    def reconstruct(self, ep: Epoch, channels: Sequence[int]) -> Reconstruction:
        """Mask ``channels`` of ``ep`` and let the model fill them in from the others."""
        chans = list(channels)
        rec = self.decoder.reconstruct(ep.data, chans)
        return Reconstruction(ep.epoch_id, chans, ep.data[chans], rec[chans])


def repetition_key(label: str | None, stream: str | None) -> str | None:
    """Repetitions are averaged within a stream, never across subjects (None: no label)."""
    return label if stream is None or label is None else f"{stream}/{label}"


def _rounded(dec: Decoded) -> list[float]:
    return [round(s, SCORE_DIGITS) for s in dec.topk_scores]


class RunningAccuracy:
    """Top-1 / top-5 of the results whose truth is known: the marker is one of the template
    bank's image ids (``topk_ids[:5]``: top-min(5, k) when the engine's k is smaller).

    Repetition-averaged decisions are scored two ways, both kept from before this was shared:
    ``n_avg_top1 / n_avg_judged`` counts every averaged decision (the viewer's status bar);
    :meth:`summary`'s ``avg_top1`` scores only the latest averaged decisions, as many as there are
    template images (about one current decision per image; the demo's line and JSON).

    The information transfer rate (:mod:`neuralign.itr`) treats each single trial as one
    selection among the bank's images at the running top-1 accuracy, at the observed
    presentation rate (marked results over the span of their stimulus onsets).
    """

    def __init__(self, template_ids: Iterable[str]):
        self.known = frozenset(template_ids)
        self.n_judged = self.n_top1 = self.n_top5 = 0
        self.n_avg_judged = self.n_avg_top1 = 0
        self._latest_avg: deque[tuple[bool, int]] = deque(maxlen=max(1, len(self.known)))
        self.n_presented = 0  # marked results (stimulus presentations), truth known or not
        self._first_onset = math.inf
        self._last_onset = -math.inf

    @property
    def presentations_per_s(self) -> float | None:
        """Observed presentation rate; None before two presentations at distinct times."""
        span = self._last_onset - self._first_onset
        if self.n_presented < 2 or not math.isfinite(span) or span <= 0:
            return None
        return (self.n_presented - 1) / span

    def add(self, r: Result) -> bool:
        """Score one result; False when its truth is unknown (not counted)."""
        if r.marker is not None and math.isfinite(r.marker_timestamp):
            self.n_presented += 1
            self._first_onset = min(self._first_onset, r.marker_timestamp)
            self._last_onset = max(self._last_onset, r.marker_timestamp)
        if r.marker is None or r.marker not in self.known or not r.topk_ids:
            return False
        self.n_judged += 1
        self.n_top1 += r.topk_ids[0] == r.marker
        self.n_top5 += r.marker in r.topk_ids[:5]
        if r.avg_topk_ids:
            hit = r.avg_topk_ids[0] == r.marker
            self.n_avg_judged += 1
            self.n_avg_top1 += hit
            self._latest_avg.append((hit, r.n_repetitions))
        return True

    def extend(self, results: Iterable[Result]) -> RunningAccuracy:
        for r in results:
            self.add(r)
        return self

    def summary(self) -> dict[str, float]:
        """``{"n"}`` alone before any judged result, else ``n, top1, top5, chance_top1``, once
        the presentation rate is known ``n_candidates, presentations_per_s, itr_bits,
        itr_bits_per_min`` (single-trial Wolpaw ITR) and, once an image repeated, ``avg_top1,
        avg_n_repetitions`` (JSON-ready)."""
        n = self.n_judged
        if not n:
            return {"n": 0}
        out: dict[str, float] = {"n": n, "top1": self.n_top1 / n, "top5": self.n_top5 / n,
                                 "chance_top1": 1 / len(self.known)}
        rate = self.presentations_per_s
        if rate is not None:
            n_cand = len(self.known)
            out.update(n_candidates=n_cand, presentations_per_s=rate,
                       itr_bits=wolpaw_bits(n_cand, out["top1"]),
                       itr_bits_per_min=bits_per_minute(n_cand, out["top1"], 1 / rate))
        latest = self._latest_avg
        if latest:
            out["avg_top1"] = sum(hit for hit, _ in latest) / len(latest)
            out["avg_n_repetitions"] = max(reps for _, reps in latest)
        return out
