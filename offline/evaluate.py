"""The papers' evaluation protocols, on held-out zero-shot concepts.

- Decoding (BrainAE Sec. 4.4, NICE/ATM protocol): queries = test epochs averaged over repetitions;
  cosine similarity with templates; **retrieval** templates = the test images' embeddings,
  **classification** templates = concept centres built from NON-stimulus images of each test
  concept (each embedding L2-normalised, averaged, re-normalised). Top-1 / top-5.
- Accuracy against the number of averaged repetitions (1, 2, 4, ... all; single-trial is what a
  live session sees), averaged over random draws.
- Encoding (BrainAE Sec. 4.3): brain activity predicted from the image (D_B(P(f))) vs the
  repetition-averaged recording; Pearson r per image over channels x time, and MSE, on all and on
  visual channels; per-channel r for a topomap.
- Discriminative encoding / decoding ROC AUC (VNA): matched vs unmatched image-response pairs.
- Masked-channel reconstruction (BrainAE Sec. 4.6, Fig. 4): random / spatial / temporal /
  forecast masks at 10-90 %; Pearson r on the masked entries and retrieval top-1 of masked input.
- Ridge baselines (Gifford 2022 encoding; linear decoding) with the penalty chosen by
  cross-validation on training images only, scored with the same functions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import RidgeCV
from sklearn.metrics import roc_auc_score

from neuralign.offline.prepare import Prepared, visual_channel_mask

log = logging.getLogger(__name__)

MASK_KINDS = ("random", "spatial", "temporal", "forecast")
MASK_RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)
RIDGE_ALPHAS = np.logspace(-1, 6, 15)


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


def topk(sim: np.ndarray, target: np.ndarray, ks=(1, 5)) -> dict[str, float]:
    """Top-k accuracy of rows of ``sim`` (queries x templates) against target template indices."""
    order = np.argsort(-sim, axis=1)
    return {f"top{k}": float(np.mean([t in row[:k] for row, t in zip(order, target)])) for k in ks}


def pair_auc(sim: np.ndarray) -> float:
    """ROC AUC of matched (diagonal) vs unmatched pairs of a square similarity matrix."""
    labels = np.eye(len(sim), dtype=bool).ravel()
    return float(roc_auc_score(labels, sim.ravel()))


def per_query_auc(sim: np.ndarray) -> float:
    """Mean over rows of the ROC AUC of the matched (diagonal) candidate against the others.

    Row i ranks every candidate for query i: discriminative decoding when rows are responses and
    columns images, discriminative encoding on the transpose (VNA Section 4). Ties count half.
    """
    n = len(sim)
    if n < 2:
        return float("nan")
    pos = np.diag(sim)[:, None]
    off = ~np.eye(n, dtype=bool)
    wins = ((sim < pos) & off).sum(1) + 0.5 * ((sim == pos) & off).sum(1)
    return float((wins / (n - 1)).mean())


def pearson_per_row(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a**2).sum(1) * (b**2).sum(1))
    return (a * b).sum(1) / np.maximum(den, 1e-12)


def encoding_metrics(pred: np.ndarray, true: np.ndarray, visual: np.ndarray) -> dict[str, float]:
    """Encoding scores of predicted vs recorded (images, C, T) responses, on all / visual channels.

    ``pearson_r_*`` (BrainAE Table 1): r per image over channels x time, averaged over images; the
    response common to all images dominates it. ``pearson_r_across_images_*`` (Gifford 2022): r
    across images per channel and time point, averaged; only the image-specific part counts.
    """
    res = {}
    n = len(pred)
    for name, mask in (("all", np.ones_like(visual)), ("visual", visual)):
        p = pred[:, mask].reshape(n, -1)
        t = true[:, mask].reshape(n, -1)
        per_image = pearson_per_row(p, t)
        res[f"pearson_r_{name}"] = float(per_image.mean())
        res[f"pearson_r_per_image_{name}"] = per_image.tolist()
        res[f"mse_{name}"] = float(((p - t) ** 2).mean())
        res[f"pearson_r_across_images_{name}"] = float(np.nanmean(pearson_per_row(p.T, t.T))) if n > 2 \
            else float("nan")
    return res


class Evaluator:
    """Scores one trained model on a :class:`Prepared` dataset."""

    def __init__(self, model, prep: Prepared, device: str | torch.device = "cpu", batch: int = 256,
                 seed: int = 0):
        self.model = model.eval().to(device)
        self.prep = prep
        self.device = torch.device(device)
        self.batch = batch
        self.rng = np.random.default_rng(seed)
        self.visual = visual_channel_mask(prep.ch_names)
        self.n_test = len(prep.test_ids)
        # VNA's direct baselines have no shared space: they score (response, image) pairs.
        self.embeds = hasattr(model, "encode_brain") and hasattr(model, "encode_image")
        self._template_bank = self._image_embeddings(prep.f_test) if self.embeds else None
        self._concept_bank, self._concept_of_test = (self._concept_centres() if self.embeds
                                                     else (None, None))

    # ---- embeddings ------------------------------------------------------------------------
    @torch.no_grad()
    def brain_embeddings(self, x: np.ndarray) -> np.ndarray:
        out = [self.model.encode_brain(torch.from_numpy(np.ascontiguousarray(x[i : i + self.batch],
                                                                               np.float32)).to(self.device))
               for i in range(0, len(x), self.batch)]
        return _unit(torch.cat(out).cpu().numpy())

    @torch.no_grad()
    def _image_embeddings(self, f: np.ndarray) -> np.ndarray:
        if len(f) == 0:
            return np.zeros((0, 1), np.float32)
        z = self.model.encode_image(torch.from_numpy(f).to(self.device))
        return _unit(z.cpu().numpy())

    def _concept_centres(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        p = self.prep
        if len(p.template_ids) == 0:
            return None, None
        z = self._image_embeddings(p.f_templates)
        concepts = list(dict.fromkeys(p.test_concepts))
        tc = np.asarray(p.template_concepts)
        bank = _unit(np.stack([z[tc == c].mean(axis=0) for c in concepts]))
        target = np.array([concepts.index(c) for c in p.test_concepts])
        return bank, target

    # ---- decoding ----------------------------------------------------------------------------
    @torch.no_grad()
    def similarity(self, x_avg: np.ndarray) -> np.ndarray:
        """(responses, test images): cosine in the shared space, or the model's own pair scores."""
        if self.embeds:
            return self.brain_embeddings(x_avg) @ self._template_bank.T
        f = torch.from_numpy(self.prep.f_test).to(self.device)
        return np.concatenate([
            self.model.scores(torch.from_numpy(np.ascontiguousarray(x_avg[i : i + self.batch],
                                                                    np.float32)).to(self.device), f)
            .cpu().numpy() for i in range(0, len(x_avg), self.batch)])

    def decode_scores(self, x_avg: np.ndarray) -> dict[str, dict[str, float]]:
        sim = self.similarity(x_avg)
        res = {"retrieval": {**topk(sim, np.arange(self.n_test)), "n_way": self.n_test,
                             "chance_top1": 1.0 / self.n_test}}
        if self._concept_bank is not None:
            csim = self.brain_embeddings(x_avg) @ self._concept_bank.T
            res["classification"] = {**topk(csim, self._concept_of_test),
                                     "n_way": len(self._concept_bank),
                                     "chance_top1": 1.0 / len(self._concept_bank)}
        res["decoding_auc"] = pair_auc(sim)
        return res

    def accuracy_vs_repetitions(self, n_draws: int = 10) -> list[dict]:
        x = self.prep.x_test
        n_rep = x.shape[1]
        counts = sorted({min(2**i, n_rep) for i in range(int(np.ceil(np.log2(n_rep))) + 1)})
        rows = []
        for n in counts:
            draws = 1 if n == n_rep else n_draws
            accs = []
            for _ in range(draws):
                idx = np.stack([self.rng.choice(n_rep, n, replace=False) for _ in range(len(x))])
                avg = np.take_along_axis(x, idx[:, :, None, None], axis=1).mean(axis=1)
                accs.append(self.decode_scores(avg))
            row = {"n_repetitions": n}
            for task in ("retrieval", "classification"):
                if task in accs[0]:
                    for k in ("top1", "top5"):
                        row[f"{task}_{k}"] = float(np.mean([a[task][k] for a in accs]))
            rows.append(row)
        return rows

    # ---- calibration, ITR, dynamic stopping ---------------------------------------------------
    def closed_loop(self, soa: float, temperature: float | None = None,
                    max_reps: int = 4) -> dict | None:
        """Calibrated confidence (temperatures fitted on validation trials), Wolpaw ITR of
        fixed repetitions and of dynamic stopping on the test trials, every repetition decision
        the engine's own (the averaged epoch's top-1 and ``softmax(cosine / T_r)``;
        :func:`neuralign.offline.calibration.closed_loop_report`); None for a model without a
        shared embedding space or without validation images."""
        from neuralign.offline.calibration import (
            averaged_scores,
            closed_loop_report,
            single_trial_scores,
            validation_averaged_scores,
            validation_scores,
        )

        if not self.embeds or len(self.prep.val_index) < 2:
            return None
        val = validation_scores(self.model, self.prep)
        x = self.prep.x_test
        test = single_trial_scores(self.model, x, self.prep.f_test, self.batch)
        r_max = int(min(max_reps, val.shape[1], x.shape[1]))
        return closed_loop_report(
            val, test, soa, temperature, r_max,
            val_avg=validation_averaged_scores(self.model, self.prep, r_max),
            test_avg=averaged_scores(self.model, x, self.prep.f_test, r_max, self.batch))

    # ---- encoding ----------------------------------------------------------------------------
    @torch.no_grad()
    def predicted_responses(self, f: np.ndarray, raw: bool = False) -> np.ndarray | None:
        """The model's visual encoding of images ``f``; ``raw=True``: the uncalibrated D_B(P(f))."""
        if not hasattr(self.model, "predict_response"):
            return None
        ft = torch.from_numpy(f).to(self.device)
        out = self.model.decode(self.model.encode_image(ft)) if raw else self.model.predict_response(ft)
        return out.cpu().numpy()

    def encoding_scores(self, pred: np.ndarray, true: np.ndarray) -> dict:
        res = encoding_metrics(pred, true, self.visual)
        # per channel r over (images x time): for the topomap
        pc = pred.transpose(1, 0, 2).reshape(pred.shape[1], -1)
        tc = true.transpose(1, 0, 2).reshape(true.shape[1], -1)
        res["pearson_r_per_channel"] = pearson_per_row(pc, tc).tolist()
        # discriminative encoding (VNA): does the prediction for image i match response i best?
        sim = np.corrcoef(pred.reshape(len(pred), -1), true.reshape(len(true), -1))[
            : len(pred), len(pred):]
        res["encoding_auc"] = pair_auc(sim)
        res["encoding_identification_top1"] = topk(sim, np.arange(len(sim)), ks=(1,))["top1"]
        return res

    # ---- masked reconstruction ---------------------------------------------------------------
    def make_mask(self, kind: str, ratio: float, shape: tuple[int, int]) -> np.ndarray:
        """Boolean (C, T) mask, True = masked (set to 0 before encoding)."""
        c, t = shape
        m = np.zeros(shape, dtype=bool)
        if kind == "random":
            m.ravel()[self.rng.choice(c * t, int(round(ratio * c * t)), replace=False)] = True
        elif kind == "spatial":
            m[self.rng.choice(c, max(1, int(round(ratio * c))), replace=False)] = True
        elif kind == "temporal":
            n = max(1, int(round(ratio * t)))
            start = self.rng.integers(0, t - n + 1)
            m[:, start : start + n] = True
        elif kind == "forecast":
            m[:, t - max(1, int(round(ratio * t))):] = True
        else:
            raise ValueError(f"unknown mask kind {kind!r}")
        return m

    @torch.no_grad()
    def masked_reconstruction(self, kinds=MASK_KINDS, ratios=MASK_RATIOS) -> list[dict]:
        if not hasattr(self.model, "reconstruct"):
            return []
        true = self.prep.x_test.mean(axis=1)
        rows = []
        for kind in kinds:
            for ratio in ratios:
                mask = self.make_mask(kind, ratio, true.shape[1:])
                masked = np.where(mask[None], 0.0, true).astype(np.float32)
                rec = np.concatenate([
                    self.model.reconstruct(torch.from_numpy(masked[i : i + self.batch]).to(self.device)).cpu().numpy()
                    for i in range(0, len(masked), self.batch)])
                r_masked = pearson_per_row(rec[:, mask], true[:, mask]).mean()
                r_all = pearson_per_row(rec.reshape(len(rec), -1), true.reshape(len(true), -1)).mean()
                dec = self.decode_scores(masked)
                rows.append({"mask": kind, "ratio": ratio, "pearson_r_masked": float(r_masked),
                             "pearson_r_all": float(r_all),
                             "retrieval_top1": dec["retrieval"]["top1"]})
        return rows

    def per_image_quantities(self) -> dict:
        """Per test image: retrieval hits, decoding AUC, encoding r (for paired comparisons)."""
        true = self.prep.x_test.mean(axis=1)
        return scored_quantities(self.similarity(true), self.predicted_responses(self.prep.f_test),
                                 true, self.visual)

    def run(self, masks: bool = True, soa: float = 0.2) -> dict:
        """The whole report; ``soa``: seconds per presentation (the ITR's clock)."""
        true = self.prep.x_test.mean(axis=1)
        report = {"queries": "test epochs averaged over all repetitions",
                  "prototype_normalisation": "cosine similarity; template embeddings L2-normalised; "
                  "concept centres = mean of normalised embeddings, re-normalised",
                  **self.decode_scores(true)}
        sim = self.similarity(true)
        report["discriminative"] = {  # VNA Section 4: rank candidates for each query
            "decoding_auc": per_query_auc(sim), "encoding_auc": per_query_auc(sim.T),
            "pair_score": "cosine in the shared space" if self.embeds else "-MSE (model.scores)"}
        pred = self.predicted_responses(self.prep.f_test)
        if pred is not None:
            report["encoding"] = self.encoding_scores(pred, true)
            report["encoding"]["read_out"] = (
                "calibrated: mean training response + gain * (D_B(P(f)) - mean prediction on "
                f"training images), gain {float(self.model.encoding_gain):.3f} fitted on validation images")
            # The paper's quantity, the decoder's output as is (Table 1 / Table 4).
            report["encoding_raw_decoder"] = encoding_metrics(
                self.predicted_responses(self.prep.f_test, raw=True), true, self.visual)
        report["accuracy_vs_repetitions"] = self.accuracy_vs_repetitions()
        closed = self.closed_loop(soa)
        if closed is not None:
            report["closed_loop"] = closed
        if masks:
            report["masked_reconstruction"] = self.masked_reconstruction()
        return report


def paired_comparison(model_enc: dict, baseline_enc: dict) -> dict:
    """Per-image encoding r of the model minus the baseline's, with a two-sided Wilcoxon test."""
    from scipy.stats import wilcoxon

    out = {}
    for name in ("all", "visual"):
        d = (np.asarray(model_enc[f"pearson_r_per_image_{name}"])
             - np.asarray(baseline_enc[f"pearson_r_per_image_{name}"]))
        out[name] = {"mean_difference": float(d.mean()), "images_better": float((d > 0).mean()),
                     "wilcoxon_p": float(wilcoxon(d).pvalue) if np.any(d != 0) else 1.0}
    return out


METRICS = ("retrieval_top1", "retrieval_top5", "decoding_auc", "encoding_r_visual",
           "encoding_r_across_visual")
N_BOOT = 1000


def _hits(sim: np.ndarray, k: int) -> np.ndarray:
    """Per query: is the matched (diagonal) template among the k best?"""
    order = np.argsort(-sim, axis=1)[:, :k]
    return (order == np.arange(len(sim))[:, None]).any(1).astype(float)


def _auc_rows(sim: np.ndarray) -> np.ndarray:
    """Per query: fraction of unmatched templates scored below the matched one (ties half)."""
    n = len(sim)
    pos = np.diag(sim)[:, None]
    off = ~np.eye(n, dtype=bool)
    return (((sim < pos) & off).sum(1) + 0.5 * ((sim == pos) & off).sum(1)) / (n - 1)


def _across_r(pred: np.ndarray, true: np.ndarray, idx: np.ndarray) -> float:
    """Mean over (channel, time) of the Pearson r across the images ``idx`` (with repeats)."""
    p = pred[idx] - pred[idx].mean(0)
    t = true[idx] - true[idx].mean(0)
    den = np.sqrt((p**2).sum(0) * (t**2).sum(0))
    return float(np.nanmean(np.where(den > 1e-12, (p * t).sum(0) / np.maximum(den, 1e-12), np.nan)))


def scored_quantities(sim: np.ndarray, pred: np.ndarray | None, true: np.ndarray,
                      visual: np.ndarray) -> dict:
    """What the bootstrap resamples: per-image hits / AUCs / r, and the encoding arrays."""
    out = {"retrieval_top1": _hits(sim, 1), "retrieval_top5": _hits(sim, 5),
           "decoding_auc": _auc_rows(sim)}
    if pred is not None:
        p = pred[:, visual].reshape(len(pred), -1)
        t = true[:, visual].reshape(len(true), -1)
        out["encoding_r_visual"] = pearson_per_row(p, t)
        out["encoding_arrays"] = (p, t)
    return out


def bootstrap_compare(model: dict, ridge: dict, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Point value and 95 % CI of each metric for both, and of the paired difference model - ridge.

    Test images are resampled with replacement (the same draw for both: a paired comparison).
    ``significant`` says whether the difference's CI excludes 0 and on which side.
    """
    rng = np.random.default_rng(seed)
    n = len(model["retrieval_top1"])
    draws = rng.integers(0, n, (n_boot, n))
    res = {}
    for m in METRICS:
        if m == "encoding_r_across_visual":
            if "encoding_arrays" not in model or "encoding_arrays" not in ridge:
                continue
            full = np.arange(n)

            def stat(q: dict, idx: np.ndarray) -> float:
                return _across_r(*q["encoding_arrays"], idx)
        else:
            if m not in model or m not in ridge:
                continue
            full = slice(None)

            def stat(q: dict, idx, m=m) -> float:
                return float(np.mean(q[m][idx]))
        a = np.array([stat(model, d) for d in draws])
        b = np.array([stat(ridge, d) for d in draws])
        diff = a - b
        lo, hi = np.percentile(diff, [2.5, 97.5])
        res[m] = {"model": stat(model, full), "model_ci": np.percentile(a, [2.5, 97.5]).tolist(),
                  "ridge": stat(ridge, full), "ridge_ci": np.percentile(b, [2.5, 97.5]).tolist(),
                  "difference": stat(model, full) - stat(ridge, full), "difference_ci": [lo, hi],
                  "significant": "worse" if hi < 0 else "better" if lo > 0 else "no"}
    return res


def ridge_comparison(model_q: dict, ridge_report: dict, prep: Prepared, n_boot: int = N_BOOT) -> dict:
    """Paired bootstrap of the model against its ridge baseline; pops ridge's prediction arrays.

    ``ridge_report`` is :func:`ridge_baselines` with ``return_predictions=True``. ``worse`` lists
    the metrics where the model is significantly below ridge (95 % CI of the difference < 0).
    """
    ridge_q = scored_quantities(ridge_report.pop("_similarity"), ridge_report.pop("_encoding_prediction"),
                                prep.x_test.mean(axis=1), visual_channel_mask(prep.ch_names))
    res = bootstrap_compare(model_q, ridge_q, n_boot=n_boot)
    return {"metrics": res, "worse": [m for m, v in res.items() if v["significant"] == "worse"],
            "method": f"paired bootstrap over test images ({n_boot} draws), 95 % CI of model - ridge"}


def ridge_baselines(prep: Prepared, seed: int = 0, return_predictions: bool = False) -> dict:
    """Linear decoding (brain -> features) and encoding (features -> brain), RidgeCV on training.

    Training uses the fitting rows (validation images excluded), repetitions averaged, as the
    models do; the penalty is chosen by efficient leave-one-out CV on those rows.
    ``return_predictions``: also ``_similarity`` (test responses x test images) and
    ``_encoding_prediction`` (test images, C, T) arrays, for per-image comparisons.
    """
    fit = prep.fit_index
    x_tr = prep.x_train[fit].mean(axis=1)
    x_te = prep.x_test.mean(axis=1)
    f_tr, f_te = prep.f_train[fit], prep.f_test
    n, c, t = x_te.shape
    dec = RidgeCV(alphas=RIDGE_ALPHAS).fit(x_tr.reshape(len(x_tr), -1), f_tr)
    zb = _unit(dec.predict(x_te.reshape(n, -1)))
    sim = zb @ _unit(f_te).T
    out = {"retrieval": {**topk(sim, np.arange(n)), "n_way": n, "chance_top1": 1.0 / n},
           "decoding_auc": pair_auc(sim), "decoding_alpha": float(dec.alpha_)}
    if len(prep.template_ids):
        concepts = list(dict.fromkeys(prep.test_concepts))
        tc = np.asarray(prep.template_concepts)
        bank = _unit(np.stack([_unit(prep.f_templates[tc == cc]).mean(0) for cc in concepts]))
        target = np.array([concepts.index(cc) for cc in prep.test_concepts])
        out["classification"] = {**topk(zb @ bank.T, target), "n_way": len(concepts),
                                 "chance_top1": 1.0 / len(concepts)}
    enc = RidgeCV(alphas=RIDGE_ALPHAS).fit(f_tr, x_tr.reshape(len(x_tr), -1))
    pred = enc.predict(f_te).reshape(n, c, t)
    visual = visual_channel_mask(prep.ch_names)
    out["encoding"] = {"alpha": float(enc.alpha_), **encoding_metrics(pred, x_te, visual)}
    # The floor every encoder should clear: the mean training response, the same for every image.
    out["mean_response"] = {"encoding": encoding_metrics(
        np.broadcast_to(prep.mean_response, x_te.shape), x_te, visual)}
    if return_predictions:
        out["_similarity"], out["_encoding_prediction"] = sim, pred
    return out


def write_figures(report: dict, prep: Prepared, out_dir: Path) -> list[Path]:
    """Accuracy-vs-repetitions curve, masked-reconstruction curves, encoding-r topomap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    rows = report.get("accuracy_vs_repetitions", [])
    if rows:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        n = [r["n_repetitions"] for r in rows]
        for key in ("retrieval_top1", "retrieval_top5", "classification_top1"):
            if key in rows[0]:
                ax.plot(n, [r[key] for r in rows], marker="o", label=key.replace("_", " "))
        ax.axhline(report["retrieval"]["chance_top1"], color="grey", ls=":", label="chance top-1")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("averaged repetitions")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out_dir / "accuracy_vs_repetitions.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    closed = report.get("closed_loop")
    if closed:
        paths += _closed_loop_figures(closed, out_dir)
    masks = report.get("masked_reconstruction", [])
    if masks:
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
        for kind in MASK_KINDS:
            sel = [r for r in masks if r["mask"] == kind]
            axes[0].plot([r["ratio"] for r in sel], [r["pearson_r_masked"] for r in sel], marker="o", label=kind)
            axes[1].plot([r["ratio"] for r in sel], [r["retrieval_top1"] for r in sel], marker="o", label=kind)
        axes[0].set_title("reconstruction r (masked entries)")
        axes[1].set_title("retrieval top-1")
        for ax in axes:
            ax.set_xlabel("mask ratio")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        paths.append(out_dir / "masked_reconstruction.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    enc = report.get("encoding", {})
    if "pearson_r_per_channel" in enc and prep.meta.get("modality") == "eeg":
        try:
            import mne

            info = mne.create_info(prep.ch_names, 100.0, "eeg")
            info.set_montage("easycap-M1", on_missing="ignore")
            fig, ax = plt.subplots(figsize=(3.5, 3.5))
            mne.viz.plot_topomap(np.asarray(enc["pearson_r_per_channel"]), info, axes=ax, show=False)
            ax.set_title("encoding r per channel")
            paths.append(out_dir / "encoding_topomap.png")
            fig.savefig(paths[-1], dpi=120)
            plt.close(fig)
        except Exception as exc:  # a figure must never fail an evaluation
            log.warning("encoding topomap skipped: %s", exc)
    return paths


def _closed_loop_figures(closed: dict, out_dir: Path) -> list[Path]:
    """The reliability diagram (validation and test single trials, test accumulated) and
    accuracy / ITR against repetitions (fixed) with the dynamic-stopping points."""
    import matplotlib.pyplot as plt

    cal = closed["calibration"]
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    for key, label in (("validation_single_trial", "validation, single trial"),
                       ("test_single_trial", "test, single trial"),
                       ("test_accumulated", f"test, averaged 1-{closed['max_reps']} reps, T_r")):
        bins = cal[key]["reliability"]
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o",
                label=f"{label} (ECE {cal[key]['ece']:.3f})")
    ax.set_xlabel("top-1 probability")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(f"reliability, T = {closed['temperature']:.3f}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths = [out_dir / "reliability.png"]
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fixed, dyn = closed["fixed"], closed["dynamic_stopping"]["test"]
    rec = closed["dynamic_stopping"]["recommended"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    r = [row["n_repetitions"] for row in fixed]
    for ax, key, name in ((axes[0], "accuracy", "top-1 accuracy"),
                          (axes[1], "bits_per_min", "ITR (bits/min)")):
        ax.plot(r, [row[key] for row in fixed], marker="o", label="fixed, averaged epochs")
        ax.scatter([d["mean_presentations"] for d in dyn], [d[key] for d in dyn], marker="x",
                   color="C3", label="dynamic stopping")
        ax.scatter([rec["mean_presentations"]], [rec[key]], s=90, facecolors="none",
                   edgecolors="C3", label=f"recommended (p >= {rec['threshold']})")
        ax.set_xlabel("presentations per selection")
        ax.set_ylabel(name)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{closed['n_candidates']} candidates, SOA {closed['soa_s']} s", fontsize=9)
    fig.tight_layout()
    paths.append(out_dir / "itr_vs_repetitions.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
