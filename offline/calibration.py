"""Calibrated retrieval probabilities: temperature scaling, reliability, accumulated evidence.

Why: a cosine score says which template ranks first, not how likely it is to be right; a
closed-loop presenter needs a probability to decide when to stop showing an image. The model's
single-trial cosine scores against the template bank become ``softmax(score / T)`` over the whole
bank; ``T`` is the one parameter, chosen to minimise the negative log-likelihood of the true
image on validation trials (images held out of training; never the test trials a report scores).

After ``r`` presentations the engine decides on the running average of the ``r`` epochs (decoding
the averaged epoch ranks better than summing per-repetition log-likelihoods), so the posterior is
that decision's: ``softmax(score_r / T_r)`` of the averaged epoch's cosines, with one temperature
per repetition count ``r`` fitted the same way on validation sequences (``T_1 = T``; beyond the
largest ``r`` validation shows, the last). Summing ``score / T`` over repetitions instead treats
correlated repetitions as independent and is over-confident. That is what
:class:`neuralign.realtime.decisions.ResultBuilder` computes live, and what
:func:`dynamic_stopping` simulates offline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from neuralign.bundle import CalibrationSection, repetition_temperature

#: bounds of the temperature search (cosine scores live in [-1, 1])
T_BOUNDS = (1e-3, 10.0)
N_BINS = 10
#: dynamic-stopping thresholds on the accumulated top-1 posterior
THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
#: the fixed repetition count dynamic stopping is compared with (and its cap)
REFERENCE_REPS = 4


def log_posterior(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise log softmax of ``scores / T`` over the last axis (the template bank)."""
    return log_softmax(np.asarray(scores, np.float64) / temperature, axis=-1)


def nll(scores: np.ndarray, target: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the true template (``target`` indexes the last axis)."""
    lp = log_posterior(scores, temperature)
    return float(-np.take_along_axis(lp, np.asarray(target)[:, None], axis=-1).mean())


def fit_temperature(scores: np.ndarray, target: np.ndarray,
                    bounds: tuple[float, float] = T_BOUNDS) -> float:
    """The temperature minimising :func:`nll` of ``scores`` (trials, bank) (1-D, on log T)."""
    res = minimize_scalar(lambda lt: nll(scores, target, float(np.exp(lt))),
                          bounds=tuple(np.log(bounds)), method="bounded",
                          options={"xatol": 1e-4})
    return float(np.exp(res.x))


def reliability_bins(confidence: np.ndarray, correct: np.ndarray,
                     n_bins: int = N_BINS) -> list[dict[str, float]]:
    """Equal-width confidence bins: ``lo, hi, n, confidence`` (mean) and ``accuracy`` of the
    non-empty ones (the reliability diagram's points)."""
    conf = np.asarray(confidence, np.float64)
    hit = np.asarray(correct, np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        sel = which == b
        if sel.any():
            out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(sel.sum()),
                        "confidence": float(conf[sel].mean()), "accuracy": float(hit[sel].mean())})
    return out


def ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error of top-1 confidence: the trial-weighted mean over
    :func:`reliability_bins` of ``|accuracy - confidence|``."""
    bins = reliability_bins(confidence, correct, n_bins)
    n = sum(b["n"] for b in bins)
    return float(sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / max(n, 1))


def top1(log_post: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 confidence, hit) of each row of a log posterior."""
    return np.exp(log_post.max(axis=-1)), log_post.argmax(axis=-1) == np.asarray(target)


def calibration_report(scores: np.ndarray, target: np.ndarray, temperature: float,
                       n_bins: int = N_BINS) -> dict:
    """ECE, NLL, accuracy, mean confidence and the reliability bins of ``scores`` at ``T``."""
    conf, hit = top1(log_posterior(scores, temperature), target)
    return {"n_trials": len(target), "ece": ece(conf, hit, n_bins),
            "nll": nll(scores, target, temperature), "accuracy": float(hit.mean()),
            "mean_confidence": float(conf.mean()),
            "reliability": reliability_bins(conf, hit, n_bins)}


def repetition_log_posterior(avg_scores: np.ndarray, temperatures) -> np.ndarray:
    """(sequences, reps, bank) cosines of the average of the first ``r`` repetitions (at
    ``[:, r - 1]``) -> the log posterior of each: log softmax of ``score / T_r``."""
    s = np.asarray(avg_scores, np.float64)
    t = np.array([repetition_temperature(temperatures, r) for r in range(1, s.shape[1] + 1)])
    return log_softmax(s / t[None, :, None], axis=-1)


def fit_repetition_temperatures(avg_scores: np.ndarray, target: np.ndarray,
                                temperature: float | None = None) -> list[float]:
    """``T_r`` of each repetition count of ``avg_scores`` (sequences, reps, bank), each minimising
    the NLL of ``target`` at that count; ``temperature`` (the single-trial fit, on every
    validation trial rather than the first of each sequence) is ``T_1`` when given."""
    ts = [fit_temperature(avg_scores[:, r], target) for r in range(avg_scores.shape[1])]
    if temperature is not None:
        ts[0] = float(temperature)
    return ts


def mean_of_first(scores: np.ndarray) -> np.ndarray:
    """(sequences, reps, bank) single-trial scores -> the mean of the first ``r`` at ``[:, r-1]``:
    the averaged epoch's scores of a linear model (synthetic scores, tests)."""
    s = np.asarray(scores, np.float64)
    return np.cumsum(s, axis=1) / np.arange(1, s.shape[1] + 1)[None, :, None]


def blocks(scores: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(images, reps, bank) -> (sequences, size, bank) and each sequence's image: the
    repetitions of each image cut in order into disjoint blocks of ``size`` (a presentation
    sequence each; the ``reps % size`` left over are not used)."""
    n_img, reps, _ = scores.shape
    k = reps // size
    if k < 1:
        raise ValueError(f"{reps} repetitions cannot make a block of {size}")
    seq = scores[:, : k * size].reshape(n_img * k, size, scores.shape[2])
    return seq, np.repeat(np.arange(n_img), k)


@dataclass
class StopResult:
    """Dynamic stopping at one threshold over a set of presentation sequences."""

    threshold: float
    max_reps: int
    accuracy: float
    mean_presentations: float

    def to_dict(self, n_candidates: int, soa: float) -> dict[str, float]:
        from neuralign.itr import bits_per_minute, wolpaw_bits

        return {"threshold": self.threshold, "max_reps": self.max_reps,
                "accuracy": self.accuracy, "mean_presentations": self.mean_presentations,
                "bits_per_selection": wolpaw_bits(n_candidates, self.accuracy),
                "bits_per_min": bits_per_minute(n_candidates, self.accuracy,
                                                self.mean_presentations * soa)}


def dynamic_stopping(acc_log_post: np.ndarray, target: np.ndarray, threshold: float,
                     max_reps: int | None = None) -> StopResult:
    """Present each sequence's repetitions in order; stop at the first whose accumulated top-1
    posterior reaches ``threshold`` (or at ``max_reps``) and decide its top-1 there."""
    lp = acc_log_post[:, : max_reps or acc_log_post.shape[1]]
    r = lp.shape[1]
    conf = np.exp(lp.max(axis=-1))  # (sequences, reps)
    reached = conf >= threshold
    stop = np.where(reached.any(axis=1), reached.argmax(axis=1), r - 1)
    decided = lp[np.arange(len(lp)), stop].argmax(axis=-1)
    return StopResult(float(threshold), r, float((decided == np.asarray(target)).mean()),
                      float((stop + 1).mean()))


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


def single_trial_scores(model, x: np.ndarray, f: np.ndarray, batch: int = 256) -> np.ndarray:
    """Cosine of every single trial of ``x`` (images, reps, C, T) with every image of ``f``
    (the bank: images, D) in the model's shared space: (images, reps, bank)."""
    import torch

    n_img, reps = x.shape[:2]
    flat = x.reshape(n_img * reps, *x.shape[2:])
    model = model.eval()
    with torch.no_grad():
        z = torch.cat([model.encode_brain(torch.from_numpy(
            np.ascontiguousarray(flat[i : i + batch], np.float32))) for i in range(0, len(flat), batch)])
        bank = model.encode_image(torch.from_numpy(np.ascontiguousarray(f, np.float32)))
    return (_unit(z.numpy()) @ _unit(bank.numpy()).T).reshape(n_img, reps, len(f))


def averaged_scores(model, x: np.ndarray, f: np.ndarray, r_max: int,
                    batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The engine's repetition decision offline: the repetitions of each image of ``x``
    (images, reps, C, T) cut into :func:`blocks` of ``r_max``, and the cosines with the bank ``f``
    of the average of each block's first ``r`` epochs: ((sequences, r_max, bank), each
    sequence's image)."""
    n_img, reps = x.shape[:2]
    k = reps // r_max
    if k < 1:
        raise ValueError(f"{reps} repetitions cannot make a block of {r_max}")
    seq = np.asarray(x[:, : k * r_max], np.float32).reshape(n_img * k, r_max, *x.shape[2:])
    means = np.cumsum(seq, axis=1, dtype=np.float64)
    means /= np.arange(1, r_max + 1)[None, :, None, None]
    return (single_trial_scores(model, means.astype(np.float32), f, batch),
            np.repeat(np.arange(n_img), k))


def _validation(prep) -> tuple[np.ndarray, np.ndarray]:
    vi = np.asarray(prep.val_index)
    if len(vi) < 2:
        raise ValueError(f"{len(vi)} validation images: cannot fit a temperature")
    return prep.x_train[vi], prep.f_train[vi]


def validation_scores(model, prep) -> np.ndarray:
    """:func:`single_trial_scores` of the validation images' trials against a bank of the
    validation images (a retrieval task of about the test bank's size)."""
    return single_trial_scores(model, *_validation(prep))


def validation_averaged_scores(model, prep, r_max: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`averaged_scores` of the validation images against a bank of themselves."""
    x, f = _validation(prep)
    return averaged_scores(model, x, f, min(r_max, x.shape[1]))


def split_name(how: str = "images") -> str:
    """What the validation trials are, by ``training.validation_split`` (bundle and report)."""
    return ("validation concepts (every image of training concepts held out of training)"
            if how == "concepts" else "validation images (held out of training)")


def fit_bundle_calibration(model, prep, validation_split: str = "images"):
    """The bundle's :class:`~neuralign.bundle.CalibrationSection`, fitted on validation trials
    (``validation_split``: how they were drawn, ``training.validation_split``)."""

    s = validation_scores(model, prep)
    flat = s.reshape(-1, s.shape[2])
    target = np.repeat(np.arange(s.shape[0]), s.shape[1])
    t = fit_temperature(flat, target)
    rep = calibration_report(flat, target, t)
    r_max = min(REFERENCE_REPS, s.shape[1])
    avg, seq_target = validation_averaged_scores(model, prep, r_max)
    ts = fit_repetition_temperatures(avg, seq_target, t)
    _, dyn, best = recommend_threshold(repetition_log_posterior(avg, ts), seq_target)
    return CalibrationSection(temperature=t, repetition_temperatures=ts, split=split_name(validation_split),
                              n_trials=len(target), n_candidates=s.shape[2],
                              nll=rep["nll"], ece=rep["ece"],
                              recommended_threshold=dyn[best].threshold,
                              recommended_max_reps=r_max)


def _fixed_rows(acc_lp: np.ndarray, target: np.ndarray, n_cand: int, soa: float) -> list[dict]:
    from neuralign.itr import bits_per_minute, wolpaw_bits

    rows = []
    for r in range(1, acc_lp.shape[1] + 1):
        conf, hit = top1(acc_lp[:, r - 1], target)
        acc = float(hit.mean())
        rows.append({"n_repetitions": r, "accuracy": acc, "mean_confidence": float(conf.mean()),
                     "ece": ece(conf, hit), "bits_per_selection": wolpaw_bits(n_cand, acc),
                     "bits_per_min": bits_per_minute(n_cand, acc, r * soa)})
    return rows


def recommend_threshold(acc_log_post: np.ndarray, target: np.ndarray,
                        thresholds: tuple[float, ...] = THRESHOLDS,
                        ) -> tuple[float, list[StopResult], int]:
    """(fixed accuracy at the last repetition, dynamic stopping at each threshold, index of the
    recommended one): the fewest mean presentations whose accuracy reaches the fixed one (the
    highest threshold, which stops latest, when none does)."""
    fixed = float((acc_log_post[:, -1].argmax(-1) == np.asarray(target)).mean())
    dyn = [dynamic_stopping(acc_log_post, target, th) for th in thresholds]
    ok = [i for i, d in enumerate(dyn) if d.accuracy >= fixed] or [len(thresholds) - 1]
    return fixed, dyn, min(ok, key=lambda i: (dyn[i].mean_presentations, -thresholds[i]))


def _accumulated(conf_hit: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    conf = np.concatenate([c for c, _ in conf_hit])
    hit = np.concatenate([h for _, h in conf_hit])
    return {"ece": ece(conf, hit), "accuracy": float(hit.mean()),
            "mean_confidence": float(conf.mean()), "n_decisions": len(hit),
            "reliability": reliability_bins(conf, hit)}


def closed_loop_report(val_scores: np.ndarray, test_scores: np.ndarray, soa: float,
                       temperature: float | None = None, max_reps: int = REFERENCE_REPS,
                       thresholds: tuple[float, ...] = THRESHOLDS,
                       val_avg: tuple[np.ndarray, np.ndarray] | None = None,
                       test_avg: tuple[np.ndarray, np.ndarray] | None = None,
                       repetition_temperatures: list[float] | None = None) -> dict:
    """Calibration, fixed-repetition and dynamic-stopping ITR of validation and test trials.

    ``val_scores`` / ``test_scores``: single-trial scores (images, reps, bank) (target: image i
    is bank entry i). ``val_avg`` / ``test_avg``: (scores of the average of each sequence's first
    r epochs (sequences, max_reps, bank), each sequence's image), as :func:`averaged_scores`
    makes them; None: :func:`mean_of_first` of the scores' :func:`blocks` (a linear model).
    ``T`` and ``T_r`` (fitted on validation unless given) and the recommended threshold are
    chosen on validation trials; every number reported as "test" comes from the test trials.
    The recommendation is the threshold with the fewest mean presentations whose validation
    accuracy reaches the fixed ``max_reps`` accuracy there.
    """
    r_max = int(min(max_reps, val_scores.shape[1], test_scores.shape[1]))
    vflat = val_scores.reshape(-1, val_scores.shape[2])
    vt = np.repeat(np.arange(val_scores.shape[0]), val_scores.shape[1])
    t = fit_temperature(vflat, vt) if temperature is None else float(temperature)
    tflat = test_scores.reshape(-1, test_scores.shape[2])
    tt = np.repeat(np.arange(test_scores.shape[0]), test_scores.shape[1])
    n_val, n_test = val_scores.shape[2], test_scores.shape[2]

    def avg_of(scores, given):
        if given is not None:
            return np.asarray(given[0])[:, :r_max], np.asarray(given[1])
        seq, target = blocks(scores, r_max)
        return mean_of_first(seq), target

    (v_avg, vtg), (t_avg, ttg) = avg_of(val_scores, val_avg), avg_of(test_scores, test_avg)
    ts = (fit_repetition_temperatures(v_avg, vtg, t) if repetition_temperatures is None
          else [float(x) for x in repetition_temperatures])
    v_lp, t_lp = repetition_log_posterior(v_avg, ts), repetition_log_posterior(t_avg, ts)
    # the summed-evidence posterior of the same sequences (before T_r), for comparison
    sum_lp = log_posterior(np.cumsum(blocks(test_scores, r_max)[0], axis=1), t)
    by_r = [top1(t_lp[:, r], ttg) for r in range(r_max)]
    v_fixed, v_dyn, best = recommend_threshold(v_lp, vtg, thresholds)
    t_dyn = [dynamic_stopping(t_lp, ttg, th) for th in thresholds]
    fixed = _fixed_rows(t_lp, ttg, n_test, soa)
    for row, (c, h) in zip(fixed, (top1(sum_lp[:, r], ttg) for r in range(r_max))):
        row.update(temperature=repetition_temperature(ts, row["n_repetitions"]),
                   summed_evidence_accuracy=float(h.mean()),
                   summed_evidence_ece=ece(c, h))
    rec = t_dyn[best].to_dict(n_test, soa)
    rec.update(validation_accuracy=v_dyn[best].accuracy,
               validation_mean_presentations=v_dyn[best].mean_presentations,
               validation_fixed_accuracy=v_fixed,
               fixed_accuracy=fixed[-1]["accuracy"],
               presentations_saved=1 - rec["mean_presentations"] / r_max,
               reaches_fixed_accuracy=rec["accuracy"] >= fixed[-1]["accuracy"])
    return {
        "temperature": t, "repetition_temperatures": ts, "soa_s": soa,
        "n_candidates": n_test, "max_reps": r_max,
        "method": "p = softmax(cosine / T) over the template bank; T minimises the NLL of the "
                  "true image on validation single trials; after r presentations the posterior "
                  "is softmax(cosine of the averaged epoch / T_r), T_r fitted likewise on "
                  "validation sequences (the decision the engine makes)",
        "calibration": {
            "validation_single_trial": calibration_report(vflat, vt, t),
            "test_single_trial": calibration_report(tflat, tt, t),
            "test_accumulated": _accumulated(by_r),
            "test_summed_evidence": _accumulated(
                [top1(sum_lp[:, r], ttg) for r in range(r_max)]),
            "n_validation_candidates": n_val},
        "fixed": fixed,
        "dynamic_stopping": {
            "sequences": {"validation": len(vtg), "test": len(ttg)},
            "test": [d.to_dict(n_test, soa) for d in t_dyn],
            "validation": [d.to_dict(n_val, soa) for d in v_dyn],
            "recommended": rec},
    }
