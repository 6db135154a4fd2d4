"""A run directory and what the CLI does with it: evaluate, export, ablate.

A run directory holds ``config.yaml``, ``prepared.npz`` (the exact arrays trained on),
``model.safetensors`` (best-validation checkpoint) and ``history.json``; ``evaluate`` adds
``report.json`` and ``figures/``; ``export`` writes a bundle from it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from neuralign.config import Config, dump_config
from neuralign.errors import DataError
from neuralign.offline.run_dir import load_run

log = logging.getLogger(__name__)

ABLATIONS = {
    "full": {},
    "w/o L_con": {"con": 0.0},
    "w/o L_fea": {"fea": 0.0},
    "w/o L_recon": {"recon_b": 0.0, "recon_i": 0.0},
    "w/o L_reconB": {"recon_b": 0.0},
    "w/o L_reconI": {"recon_i": 0.0},
}
# What `neuralign train --ablation` runs unless told otherwise: the rows of Table 4 that carry its
# two findings (L_con drives decoding, L_recon drives encoding) plus L_fea.
DEFAULT_ABLATIONS = ["full", "w/o L_con", "w/o L_fea", "w/o L_recon"]


#: seconds per presentation when the dataset does not say (THINGS-EEG2's RSVP rate)
DEFAULT_SOA = 0.2


def presentation_soa(config: Config) -> tuple[float, str]:
    """Seconds per presentation for the ITR, and where it came from: the simulator's SOA, else
    :data:`DEFAULT_SOA` (the prepared arrays keep no onset times)."""
    sim = config.dataset.simulation
    if config.dataset.kind == "simulated" and sim is not None:
        return float(sim.soa), "dataset.simulation.soa"
    return DEFAULT_SOA, f"assumed ({DEFAULT_SOA} s, RSVP): the dataset does not record its SOA"


def evaluate_run(run_dir: Path, json_path: Path | None = None, baselines: bool = True,
                 masks: bool = True, progress: Callable[[str], None] | None = None) -> dict:
    """Evaluate a run and write its report; ``progress`` gets one line as each stage starts
    (the command prints them: the whole evaluation takes a minute or more)."""
    say = progress or (lambda _msg: None)
    from neuralign.offline.evaluate import (
        Evaluator,
        paired_comparison,
        ridge_baselines,
        ridge_comparison,
        write_figures,
    )

    say("loading the run and its data")
    config, prep, model = load_run(run_dir)
    if prep.n_subjects > 1:
        return _evaluate_subjects(run_dir, config, prep, model, json_path, say)
    t0 = time.perf_counter()
    say(f"model: retrieval, classification, encoding, repetitions{', masked channels' if masks else ''}")
    evaluator = Evaluator(model, prep, seed=config.training.seed)
    soa, soa_source = presentation_soa(config)
    report = {"run": str(run_dir), "model": config.model.name, "dataset": prep.meta.get("kind"),
              "provenance": prep.meta.get("provenance"),
              "n_test_images": len(prep.test_ids), "n_train_images": len(prep.train_ids),
              **evaluator.run(masks=masks, soa=soa)}
    if "closed_loop" in report:
        report["closed_loop"]["soa_source"] = soa_source
        report["closed_loop"]["validation_split"] = config.training.validation_split
    if baselines:
        say("ridge baselines and paired comparisons")
        report["ridge"] = ridge_baselines(prep, return_predictions=True)
        # the fidelity flags: metrics where the model is significantly below its ridge baseline
        report["vs_ridge"] = ridge_comparison(evaluator.per_image_quantities(), report["ridge"], prep)
        if "encoding" in report:
            report["encoding_vs_ridge"] = paired_comparison(report["encoding"], report["ridge"]["encoding"])
    history = Path(run_dir) / "history.json"
    if history.is_file():
        h = json.loads(history.read_text())
        report["training"] = {k: h[k] for k in ("best_epoch", "best_val_loss", "epochs", "seconds",
                                                "samples_per_second") if k in h}
    say("figures")
    report["figures"] = [str(p) for p in write_figures(report, prep, Path(run_dir) / "figures")]
    report["evaluation_seconds"] = time.perf_counter() - t0
    out = Path(json_path) if json_path else Path(run_dir) / "report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    return report


def _evaluate_subjects(run_dir: Path, config: Config, prep, model, json_path: Path | None,
                       say: Callable[[str], None]) -> dict:
    """A run pretrained on several subjects: each subject's zero-shot test through its own input
    layer (retrieval, classification, repetitions), and their mean. How well the shared encoder
    carries to a subject it never saw is what ``neuralign bench adaptation`` measures."""
    from neuralign.models.subject_layers import select_subject
    from neuralign.offline.evaluate import Evaluator

    t0 = time.perf_counter()
    per: dict[str, dict] = {}
    soa, _ = presentation_soa(config)
    for s, name in enumerate(prep.subjects):
        say(f"subject {name}")
        select_subject(model, s)
        per[name] = Evaluator(model, prep.subject_view(s), seed=config.training.seed).run(
            masks=False, soa=soa)
    mean = {}
    for task in ("retrieval", "classification"):
        rows = [r[task] for r in per.values() if isinstance(r.get(task), dict)]
        if rows:
            keys = [k for k, v in rows[0].items() if isinstance(v, (int, float))]
            mean[task] = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    report = {"run": str(run_dir), "model": config.model.name, "dataset": prep.meta.get("kind"),
              "subjects": prep.subjects, "per_subject": per, "mean_over_subjects": mean,
              "evaluation_seconds": time.perf_counter() - t0}
    out = Path(json_path) if json_path else Path(run_dir) / "report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=float))
    return report


def _pretrained_section(run_dir: Path):
    """The bundle's record of the pretraining a fine-tuned run started from (None: scratch)."""
    from neuralign.bundle import PretrainedSection

    history = Path(run_dir) / "history.json"
    init = json.loads(history.read_text()).get("pretrained") if history.is_file() else None
    if not init:
        return None
    return PretrainedSection(run=init["run"], subjects=init["subjects"], dataset=init["dataset"],
                             channels=init["channels"])


def _thumbnails(prep, ids: list[str], size: int = 48) -> np.ndarray:
    from PIL import Image

    files = prep.meta.get("image_files", {})
    thumbs = np.zeros((len(ids), size, size, 3), np.uint8)
    for i, img in enumerate(ids):
        path = files.get(img)
        if path and Path(path).is_file():
            with Image.open(path) as im:
                thumbs[i] = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))
    return thumbs


def training_scale(prep, max_epochs: int = 400):
    """The bundle's ``scale`` section from a run's prepared arrays: the unit of each channel type
    (every reader returns SI) and the amplitude of the training epochs, whitened and not.

    The un-whitened epochs are recovered from the whitened ones (x = W^+ x' + mean; W is full
    rank, its small eigenvalues floored), so runs trained before this existed export it too.
    At most ``max_epochs`` fitting epochs, evenly spaced, are used."""
    from neuralign.bundle import ScaleSection
    from neuralign.signal.whitening import Whitening
    from neuralign.units import channel_std, median_epoch_rms, per_type_median, si_unit

    x = prep.x_train[prep.fit_index]
    x = x.reshape(-1, *x.shape[-2:])
    x = x[np.unique(np.linspace(0, len(x) - 1, min(len(x), max_epochs)).astype(int))]
    wh = Whitening.from_dict(prep.normalizer)
    raw = np.matmul(np.linalg.pinv(np.asarray(wh.w, dtype=np.float64)), x.astype(np.float64))
    if wh.mean is not None:
        raw += wh.mean[:, None]
    types = list(prep.ch_types)
    return ScaleSection(units={t: si_unit(t) or "a.u." for t in sorted(set(types))},
                        filtered_std=per_type_median(channel_std(raw), types),
                        whitened_rms=median_epoch_rms(x))


def _calibration(model, prep, validation_split: str):
    """The bundle's temperature, fitted on validation trials (None, logged, when it cannot be:
    the bundle then carries no probabilities)."""
    from neuralign.offline.calibration import fit_bundle_calibration

    try:
        return fit_bundle_calibration(model, prep, validation_split)
    except ValueError as exc:
        log.warning("no calibration in the bundle: %s", exc)
        return None


def export_run(run_dir: Path, out_dir: Path, generator_run: Path | None = None) -> Path:
    """Write the engine's bundle: weights, template bank (test images), full preprocessing spec;
    with ``generator_run`` (a FLIG / SMR+ICG run trained on this run's brain embeddings, see
    :mod:`neuralign.offline.generative.from_run`) also its generator."""
    import torch

    from neuralign.bundle import (
        ChannelsSection,
        EpochSection,
        Manifest,
        ModelSection,
        NoiseNormalizationSection,
        TemplateBankSection,
        save_bundle,
    )

    config, prep, model = load_run(run_dir)
    if prep.n_subjects > 1:
        raise DataError(f"{run_dir}: a run pretrained on {prep.n_subjects} subjects has one input "
                        "layer per subject and none for a new one; adapt it to the subject who "
                        f"will wear the cap first: neuralign train --init {run_dir} --data BLOCK")
    if not hasattr(model, "encode_image"):
        raise DataError(f"{run_dir}: a {config.model.name} run is an offline baseline with no shared "
                        "embedding space; the engine runs brainae or vna bundles")
    with torch.no_grad():
        bank = model.encode_image(torch.from_numpy(prep.f_test)).numpy()
    bank = bank / np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
    pre = config.preprocessing
    manifest = Manifest(
        channels=ChannelsSection(names=prep.ch_names, types=prep.ch_types),
        sfreq=prep.sfreq,
        modality=prep.meta.get("modality"),
        epoch=EpochSection(tmin=pre.tmin, tmax=pre.tmax, baseline=pre.baseline,
                           n_times=int(prep.x_train.shape[3])),
        preprocessing=pre,
        noise_normalization=NoiseNormalizationSection(**prep.normalizer),
        model=ModelSection(config=config.model, n_chans=int(prep.x_train.shape[2]),
                           n_times=int(prep.x_train.shape[3]),
                           feature_dim=int(prep.f_train.shape[1])),
        template_bank=TemplateBankSection(image_ids=prep.test_ids, concepts=prep.test_concepts),
        provenance=prep.meta.get("provenance"),
        training_config=dump_config(config),
        scale=training_scale(prep),
        calibration=_calibration(model, prep, config.training.validation_split),
        pretrained=_pretrained_section(run_dir),
    )
    generator_state = None
    if generator_run is not None:
        from neuralign.offline.generative.from_run import generator_for_bundle

        manifest.generator, generator_state = generator_for_bundle(run_dir, generator_run)
    return save_bundle(Path(out_dir), manifest, model.state_dict(), bank,
                       _thumbnails(prep, prep.test_ids), generator_state)


def run_ablation(config: Config, out_dir: Path, data_dir: Path | None, features: Path | None,
                 variants: list[str] | None = None) -> dict:
    """BrainAE Table 4: retrain with loss terms removed; report decoding top-1 and encoding r."""
    from neuralign.offline.prepare import prepare
    from neuralign.offline.train import train_model

    prep = prepare(config, data_dir, features)
    out_dir = Path(out_dir)
    results = {}
    for name in variants or DEFAULT_ABLATIONS:
        cfg = config.model_copy(deep=True)
        for term, value in ABLATIONS[name].items():
            setattr(cfg.model.loss_weights, term, value)
        sub = out_dir / name.replace("/", "").replace(" ", "_")
        train_model(cfg, prep, sub, progress=False)
        prep.save(sub / "prepared.npz")
        rep = evaluate_run(sub, masks=False, baselines=False)
        results[name] = {"retrieval_top1": rep["retrieval"]["top1"],
                         "retrieval_top5": rep["retrieval"]["top5"],
                         "classification_top1": rep.get("classification", {}).get("top1"),
                         # Table 4 scores the decoder's own output; the calibrated read-out
                         # falls back to the mean training response when the decoder has nothing.
                         "encoding_r_all": rep.get("encoding_raw_decoder", {}).get("pearson_r_all"),
                         "encoding_r_visual": rep.get("encoding_raw_decoder", {}).get("pearson_r_visual"),
                         "encoding_r_visual_calibrated": rep.get("encoding", {}).get("pearson_r_visual"),
                         "encoding_r_across_images_visual": rep.get("encoding", {}).get(
                             "pearson_r_across_images_visual")}
        log.info("ablation %s: %s", name, results[name])
    (out_dir / "ablation.json").write_text(json.dumps(results, indent=1))
    return results
