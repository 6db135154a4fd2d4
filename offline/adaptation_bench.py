"""How much of a new subject's data a decoder needs, from scratch and from a pretrained run.

``neuralign bench adaptation``: the built-in simulator makes several subjects (one paradigm, each
subject its own head, latency, amplitude, SNR, bad channels and idiosyncrasy). A shared encoder is
pretrained on the first ones; every other subject is held out (never seen in pretraining). For
each held-out subject and each amount of its data (minutes of a 4-repetition RSVP block at the
simulated SOA), the same model is trained from scratch and fine-tuned from the pretrained run
(``train --init``), both on exactly the same images, each with its own validation split and noise
normaliser fitted on that block only; both are scored on the subject's zero-shot test session
(retrieval among the test images, test repetitions averaged). Means and 95 % t-intervals are over
the held-out subjects.
"""

from __future__ import annotations

import json
import logging
import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from neuralign.config import Config, load_config

log = logging.getLogger(__name__)

REPETITIONS = 4  # each training image is shown this many times in a block, as THINGS-EEG2 does


@dataclass(frozen=True)
class AdaptationPlan:
    """What the bench runs (every count is a CLI option)."""

    n_subjects: int = 10
    n_pretrain: int = 6
    minutes: tuple[float, ...] = (2.0, 5.0, 10.0)  # fine-tuned from the pretrained run
    scratch_minutes: tuple[float, ...] = (2.0, 5.0, 10.0, 20.0)  # trained from scratch
    pretrain_minutes: float = 15.0  # of each pretraining subject
    # Epochs chosen on simulation seed 0 (5 and 10 min, 3 held-out subjects): scratch 30 beat
    # 20 (top-1 0.29 vs 0.25 at 5 min, 0.42 vs 0.40 at 10); fine-tuning 20 beat 30 and 12.
    scratch_epochs: int = 30
    fine_tune_epochs: int = 20
    pretrain_epochs: int = 15
    snr: float = 0.5
    seed: int = 2  # seed 0 chose the settings: the report is on data it never saw
    jobs: int = 2


@dataclass
class Point:
    """One training of one held-out subject: scratch or fine-tuned, on so many minutes."""

    subject: int
    mode: str  # "scratch" | "pretrained"
    minutes: float
    n_images: int
    top1: float = math.nan
    top5: float = math.nan
    train_seconds: float = math.nan
    best_epoch: int = -1


@dataclass
class AdaptationReport:
    plan: AdaptationPlan
    pretrain_subjects: list[int]
    held_out: list[int]
    pretrain_seconds: float
    points: list[Point] = field(default_factory=list)
    summary: list[dict] = field(default_factory=list)
    verdict: dict = field(default_factory=dict)


def images_for(minutes: float, soa: float) -> int:
    """Training images in ``minutes`` of RSVP at ``soa`` with :data:`REPETITIONS` each."""
    return int(round(minutes * 60.0 / soa / REPETITIONS))


def bench_config(plan: AdaptationPlan) -> Config:
    """The lab's config (configs/lab.yaml: the model a lab trains on one block) on simulated
    subjects; epochs of 0-0.5 s (the simulated responses end by 0.5 s: half the compute)."""
    needed = max(max(plan.scratch_minutes), max(plan.minutes), plan.pretrain_minutes)
    soa, per_concept = 0.2, 10
    n_concepts = math.ceil(images_for(needed, soa) / per_concept)
    return load_config("lab", [
        "dataset.kind=simulated", "dataset.recording=null",
        f"dataset.simulation.n_subjects={plan.n_subjects}", f"dataset.simulation.seed={plan.seed}",
        f"dataset.simulation.n_train_concepts={n_concepts}",
        f"dataset.simulation.images_per_train_concept={per_concept}",
        f"dataset.simulation.train_repetitions={REPETITIONS}",
        "dataset.simulation.n_test_concepts=50", "dataset.simulation.test_repetitions=20",
        f"dataset.simulation.soa={soa}", "dataset.simulation.sfreq=250.0",
        f"dataset.simulation.snr={plan.snr}", "preprocessing.tmax=0.5",
    ])


def _subset(dataset, n_images: int, seed: int):
    """The first ``n_images`` of a fixed per-subject shuffle of its training images (nested: a
    shorter block's images are part of every longer one)."""
    from neuralign.offline.dataset import SplitData

    order = np.sort(np.random.default_rng(seed).permutation(dataset.train.n_images)[:n_images])
    tr = dataset.train
    return replace(dataset, train=SplitData(tr.data[order], [tr.image_ids[i] for i in order],
                                            [tr.concepts[i] for i in order]))


def _prepared(config: Config, data_dir: Path, subject: int, n_images: int, features: Path):
    from neuralign.offline.prepare import load_dataset, prepare_dataset

    one = config.model_copy(update={"dataset": config.dataset.model_copy(
        update={"subject": subject, "subjects": None})})
    return prepare_dataset(one, _subset(load_dataset(one, data_dir), n_images, 1000 + subject),
                           features)


def score(run_dir: Path, prep) -> dict[str, float]:
    """Zero-shot retrieval of a run's best checkpoint on ``prep``'s test images (averaged
    repetitions against every test image's embedding)."""
    import torch
    import yaml
    from safetensors.torch import load_file

    from neuralign.config import config_from_dict
    from neuralign.models import build_model
    from neuralign.offline.evaluate import topk

    cfg = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()), str(run_dir))
    model = build_model(cfg.model, n_chans=prep.x_test.shape[2], n_times=prep.x_test.shape[3],
                        feature_dim=prep.f_test.shape[1])
    model.load_state_dict(load_file(run_dir / "model.safetensors"))
    model.eval()
    with torch.no_grad():
        zb = model.encode_brain(torch.from_numpy(prep.x_test.mean(axis=1))).numpy()
        zi = model.encode_image(torch.from_numpy(prep.f_test)).numpy()
    zb /= np.linalg.norm(zb, axis=1, keepdims=True)
    zi /= np.linalg.norm(zi, axis=1, keepdims=True)
    return topk(zb @ zi.T, np.arange(len(zi)))


def _train_point(args: tuple) -> Point:
    """One (subject, mode, minutes) training, in a worker process with one torch thread."""
    import torch

    from neuralign.offline.train import train_model

    config, data_dir, features, out, point, pretrained, epochs = args
    torch.set_num_threads(1)
    logging.getLogger("neuralign").setLevel(logging.WARNING)
    tr = config.training.model_copy(update={"epochs": epochs, "fine_tune": config.training.
                                            fine_tune.model_copy(update={"init": pretrained})})
    cfg = config.model_copy(update={"training": tr})
    run_dir = out / f"sub-{point.subject:02d}-{point.mode}-{point.minutes:g}min"
    key = _point_key(cfg, point, pretrained)
    done = run_dir / "point.json"
    if done.is_file() and json.loads(done.read_text()).get("key") == key:
        return Point(**json.loads(done.read_text())["point"])  # same settings, same weights
    prep = _prepared(config, data_dir, point.subject, point.n_images, features)
    t0 = time.perf_counter()
    hist = train_model(cfg, prep, run_dir, progress=False)
    point.train_seconds = time.perf_counter() - t0
    point.best_epoch = int(hist["best_epoch"])
    point.top1, point.top5 = (score(run_dir, prep)[k] for k in ("top1", "top5"))
    done.write_text(json.dumps({"key": key, "point": asdict(point)}))
    return point


def _point_key(cfg: Config, point: Point, pretrained: Path | None) -> str:
    """What a finished point depends on: its config, data amount and the pretrained weights
    (a re-run reuses it only when all are the same)."""
    import hashlib

    from neuralign.config import dump_config

    h = hashlib.sha256(json.dumps(dump_config(cfg), sort_keys=True, default=str).encode())
    h.update(f"{point.subject}/{point.mode}/{point.minutes}/{point.n_images}".encode())
    if pretrained is not None:
        h.update((Path(pretrained) / "model.safetensors").read_bytes())
    return h.hexdigest()


def _simulate(config: Config, data_dir: Path) -> None:
    from neuralign.offline.simulator import simulate

    stamp = data_dir / "bench-config.json"
    key = json.dumps(config.dataset.simulation.model_dump(mode="json"), sort_keys=True)
    if stamp.is_file() and stamp.read_text() == key:
        return
    simulate(config.dataset.simulation, data_dir, config.preprocessing)
    stamp.write_text(key)


def _features(config: Config, data_dir: Path) -> Path:
    """The frozen image features of every simulated image, computed once for all trainings."""
    from neuralign.offline.feature_files import save_features_npz
    from neuralign.offline.image_features import compute_features

    path, stamp = data_dir / "features.npz", data_dir / "features-config.json"
    # the images follow the simulation (more minutes, more images) and the encoder: either
    # changed, the features are computed again
    key = json.dumps([config.dataset.simulation.model_dump(mode="json"),
                      config.features.model_dump(mode="json")], sort_keys=True)
    if not (path.is_file() and stamp.is_file() and stamp.read_text() == key):
        files = {p.stem: p for p in sorted((data_dir / "image_set").rglob("*.png"))}
        ids = sorted(files)
        save_features_npz(path, compute_features(files, ids, config.features.encoder), ids)
        stamp.write_text(key)
    return path


def _pretrain(config: Config, plan: AdaptationPlan, data_dir: Path, features: Path,
              out: Path, subjects: list[int]) -> float:
    """Pretrain on ``subjects`` (in a worker: one torch thread); returns its seconds."""
    import torch

    from neuralign.offline.prepare import stack_subjects
    from neuralign.offline.train import train_model

    torch.set_num_threads(1)

    from neuralign.config import dump_config

    run_dir = out / "pretrained"
    key = json.dumps([dump_config(config), subjects, plan.pretrain_minutes, plan.pretrain_epochs],
                     sort_keys=True, default=str)
    done = run_dir / "pretrain.json"
    if done.is_file() and json.loads(done.read_text()).get("key") == key:
        return float(json.loads((run_dir / "history.json").read_text())["seconds"])
    n = images_for(plan.pretrain_minutes, config.dataset.simulation.soa)
    parts = [_prepared(config, data_dir, s, n, features) for s in subjects]
    prep = stack_subjects(parts, [str(s) for s in subjects])
    run_dir.mkdir(parents=True, exist_ok=True)
    prep.save(run_dir / "prepared.npz")
    cfg = config.model_copy(update={
        "dataset": config.dataset.model_copy(update={"subjects": subjects}),
        "training": config.training.model_copy(update={"epochs": plan.pretrain_epochs})})
    seconds = float(train_model(cfg, prep, run_dir, progress=False)["seconds"])
    done.write_text(json.dumps({"key": key}))
    return seconds


def _longest_first(jobs: list[tuple]) -> list[tuple]:
    return sorted(jobs, key=lambda j: -j[4].n_images * j[6])


def _t_interval(values: list[float]) -> tuple[float, float, float]:
    from scipy import stats

    a = np.asarray(values, dtype=float)
    if len(a) < 2:
        return float(a.mean()), math.nan, math.nan
    half = stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a))
    return float(a.mean()), float(a.mean() - half), float(a.mean() + half)


def summarise(points: list[Point]) -> list[dict]:
    """Per (mode, minutes): mean top-1 / top-5 over held-out subjects with 95 % t-intervals."""
    rows = []
    for mode in ("scratch", "pretrained"):
        for minutes in sorted({p.minutes for p in points if p.mode == mode}):
            sel = [p for p in points if p.mode == mode and p.minutes == minutes]
            t1, t5 = _t_interval([p.top1 for p in sel]), _t_interval([p.top5 for p in sel])
            rows.append({"mode": mode, "minutes": minutes, "n_subjects": len(sel),
                         "top1": t1[0], "top1_ci": t1[1:], "top5": t5[0], "top5_ci": t5[1:],
                         "train_seconds_max": max(p.train_seconds for p in sel)})
    return rows


def verdict(summary: list[dict], at: float = 5.0) -> dict:
    """Pretrained with ``at`` minutes against scratch: the least scratch data reaching it."""
    pre = next((r for r in summary if r["mode"] == "pretrained" and r["minutes"] == at), None)
    if pre is None:
        return {}
    scratch = [r for r in summary if r["mode"] == "scratch"]
    reached = [r["minutes"] for r in scratch if r["top1"] >= pre["top1"]]
    needed = min(reached) if reached else None
    return {"pretrained_minutes": at, "pretrained_top1": pre["top1"],
            "scratch_minutes_to_match": needed,
            "scratch_top1_at_2x": next((r["top1"] for r in scratch if r["minutes"] == 2 * at), None),
            "data_ratio": (needed / at) if needed else f"> {max(r['minutes'] for r in scratch) / at:g}",
            "met": needed is None or needed >= 2 * at,
            "fine_tune_seconds_max": pre["train_seconds_max"]}


def run_adaptation_bench(plan: AdaptationPlan, out: Path) -> AdaptationReport:
    """Simulate, pretrain, train every held-out point, summarise; writes ``out/report.json``."""
    out = Path(out)
    config = bench_config(plan)
    data_dir = out / "data"
    _simulate(config, data_dir)
    features = _features(config, data_dir)
    pre_subjects = list(range(1, plan.n_pretrain + 1))
    held = list(range(plan.n_pretrain + 1, plan.n_subjects + 1))
    soa = config.dataset.simulation.soa
    scratch = [(config, data_dir, features, out, Point(s, "scratch", m, images_for(m, soa)),
                None, plan.scratch_epochs) for s in held for m in plan.scratch_minutes]
    tuned = [(config, data_dir, features, out, Point(s, "pretrained", m, images_for(m, soa)),
              out / "pretrained", plan.fine_tune_epochs) for s in held for m in plan.minutes]
    points = []
    # the pretraining and the scratch trainings (which do not need it) share the workers; the
    # fine-tunings follow once it is written
    with ProcessPoolExecutor(max_workers=max(1, plan.jobs)) as pool:
        pretraining = pool.submit(_pretrain, config, plan, data_dir, features, out, pre_subjects)
        waiting = [pool.submit(_train_point, j) for j in _longest_first(scratch)]
        pre_seconds = pretraining.result()
        waiting += [pool.submit(_train_point, j) for j in _longest_first(tuned)]
        for future in waiting:
            point = future.result()
            log.info("subject %d %s %g min: top-1 %.3f top-5 %.3f (%.0f s)", point.subject,
                     point.mode, point.minutes, point.top1, point.top5, point.train_seconds)
            points.append(point)
    report = AdaptationReport(plan, pre_subjects, held, pre_seconds, points)
    report.summary = summarise(report.points)
    report.verdict = verdict(report.summary)
    (out / "report.json").write_text(json.dumps(asdict(report), indent=1, default=str))
    write_figure(report.summary, out / "adaptation.png")
    return report


def write_figure(summary: list[dict], path: Path) -> Path:
    """Top-1 and top-5 against minutes of the new subject's data, scratch and pretrained, with
    the 95 % intervals over held-out subjects as bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), constrained_layout=True)
    for ax, metric in zip(axes, ("top1", "top5")):
        for mode, color in (("scratch", "tab:gray"), ("pretrained", "tab:blue")):
            rows = sorted((r for r in summary if r["mode"] == mode), key=lambda r: r["minutes"])
            if not rows:
                continue
            m = [r["minutes"] for r in rows]
            ax.plot(m, [r[metric] for r in rows], "o-", color=color,
                    label="from scratch" if mode == "scratch" else "pretrained + fine-tuned")
            lo = [r[f"{metric}_ci"][0] for r in rows]
            hi = [r[f"{metric}_ci"][1] for r in rows]
            ax.fill_between(m, lo, hi, color=color, alpha=0.2, linewidth=0)
        ax.set_xlabel("minutes of the new subject's data")
        ax.set_ylabel(f"retrieval {metric.replace('top', 'top-')}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_report(report: AdaptationReport) -> str:
    """The table the docs show: minutes x (scratch, pretrained), top-1 / top-5 with CIs."""
    lines = [f"pretrained on subjects {report.pretrain_subjects} "
             f"({report.plan.pretrain_minutes:g} min each, {report.pretrain_seconds:.0f} s); "
             f"held out: {report.held_out}",
             "| minutes | mode | top-1 (95 % CI) | top-5 (95 % CI) | longest training |",
             "|---|---|---|---|---|"]
    for r in sorted(report.summary, key=lambda r: (r["minutes"], r["mode"])):
        lines.append(f"| {r['minutes']:g} | {r['mode']} | {r['top1']:.3f} "
                     f"({r['top1_ci'][0]:.3f}-{r['top1_ci'][1]:.3f}) | {r['top5']:.3f} "
                     f"({r['top5_ci'][0]:.3f}-{r['top5_ci'][1]:.3f}) | "
                     f"{r['train_seconds_max']:.0f} s |")
    v = report.verdict
    if v:
        lines.append(f"pretrained + {v['pretrained_minutes']:g} min: top-1 {v['pretrained_top1']:.3f}; "
                     f"scratch needs {v['scratch_minutes_to_match'] or 'more than the largest'} "
                     f"min to match (x{v['data_ratio'] if isinstance(v['data_ratio'], str) else round(v['data_ratio'], 1)}); "
                     f"target x2: {'met' if v['met'] else 'NOT met'}; longest fine-tuning "
                     f"{v['fine_tune_seconds_max']:.0f} s")
    return "\n".join(lines)
