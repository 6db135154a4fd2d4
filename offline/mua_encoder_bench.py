"""MUA encoder bench: BrainAE's brain encoder on 1024-channel MUA, today's against cheaper
front ends (``model.spatial_projection``, ``model.temporal_filters``): forward time and
retrieval, in one run.

A candidate is a comma-separated list of model-section settings on top of the ``tvsd`` config
with both front-end options reset, e.g. ``spatial_projection=64`` or ``temporal_filters=4``;
"today" is the empty one.

1. **Forward time**: random-weight ``tvsd`` bundles (``realtime/bench/mua.py``) of today's model
   and of each candidate, decoded by the engine's :class:`~neuralign.realtime.inference.
   Decoder` (folded, one thread) at batch 1 and 4, the models interleaved call by call so the
   machine's noise hits all alike; plus each folded encoder's time per stage (where it goes).
2. **Selection**: a TVSD-like simulated dataset (1024 MUA channels at 1 kHz, 0-200 ms, the
   ``tvsd`` config's preprocessing) of seed ``select_seed``; one model per candidate, scored on
   that dataset's held-out zero-shot concepts. The candidate is chosen here only.
3. **Report**: a second dataset of another simulator seed; today's model and the chosen one
   trained with the same settings, zero-shot retrieval top-1 / top-5 on its test concepts
   (repetition-averaged queries, the TVSD protocol, and single trials), with a paired bootstrap
   over test images of new - old.

``neuralign bench mua-encoder --help``. Heavy imports stay inside the functions: the CLI builds
its parser with this module's defaults.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_OUT = Path(".neuralign-cache/mua-encoder-bench")
#: the model-section keys a candidate resets to None before its own settings (today's encoder)
FRONT_END_KEYS = ("spatial_projection", "temporal_filters")
DEFAULT_CANDIDATES = ("spatial_projection=16", "spatial_projection=32", "spatial_projection=64",
                      "temporal_filters=2", "temporal_filters=4", "temporal_filters=8")
TODAY = ""


@dataclass
class MuaBenchSettings:
    """What the bench simulates, trains and times (the defaults are sized for a 2-core CPU)."""

    # the selection's candidates; spatial_projection=128 is left out: its batch-4 forward
    # measured ~10 ms, no headroom under the 10 ms budget (--timing-only times any candidate)
    candidates: tuple[str, ...] = DEFAULT_CANDIDATES
    candidate: str | None = None  # skip the selection and compare this one
    select_seed: int = 1
    test_seed: int = 2
    n_train_concepts: int = 100
    images_per_train_concept: int = 5
    train_repetitions: int = 1  # TVSD shows each training image once
    n_test_concepts: int = 100  # TVSD's 100 test images, one per concept
    test_repetitions: int = 10
    snr: float = 0.3  # the simulator's default
    epochs: int = 6
    threads: int = 1
    timing_calls: int = 100  # per model and batch size
    timing_only: bool = False
    overrides: list[str] = field(default_factory=list)  # extra --set for both models' config


def simulation_overrides(s: MuaBenchSettings, seed: int) -> list[str]:
    """``--set`` overrides that turn the ``tvsd`` config into a TVSD-like simulated dataset
    (the same list works with ``neuralign simulate`` / ``train``)."""
    sim = "dataset.simulation"
    return [
        "dataset.kind=simulated", "dataset.modality=mua", f"{sim}.modality=mua",
        f"{sim}.seed={seed}", f"{sim}.n_mua_channels=1024", f"{sim}.sfreq=1000.0",
        f"{sim}.n_train_concepts={s.n_train_concepts}",
        f"{sim}.images_per_train_concept={s.images_per_train_concept}",
        f"{sim}.train_repetitions={s.train_repetitions}",
        f"{sim}.n_test_concepts={s.n_test_concepts}", f"{sim}.template_images_per_test_concept=1",
        f"{sim}.test_repetitions={s.test_repetitions}", f"{sim}.snr={s.snr}",
        f"{sim}.soa=0.2", f"{sim}.soa_jitter=0.02",
    ]


def candidate_overrides(candidate: str) -> list[str]:
    """``"temporal_filters=4"`` -> the front-end keys reset, then ``model.temporal_filters=4``."""
    sets = [f"model.{key}=null" for key in FRONT_END_KEYS]
    return sets + [f"model.{part.strip()}" for part in candidate.split(",") if part.strip()]


def candidate_name(candidate: str) -> str:
    return candidate or "today"


def training_overrides(s: MuaBenchSettings, candidate: str) -> list[str]:
    """The training budget (every model alike) and the candidate's model settings."""
    return [f"training.epochs={s.epochs}", "training.device=cpu",
            f"training.num_threads={s.threads}", *s.overrides, *candidate_overrides(candidate)]


# ---- 1. forward time -------------------------------------------------------------------------


def _stages(encoder) -> list[tuple[str, Callable]]:
    """A folded (optionally projected) TSConv encoder as named stages, each input -> output."""
    import torch.nn.functional as F

    from neuralign.models.spatial_projection import ProjectedEncoder

    stages: list[tuple[str, Callable]] = []
    if isinstance(encoder, ProjectedEncoder):
        stages.append((f"projection {encoder.n_chans}->{encoder.n_virtual}", encoder.project))
        encoder = encoder.backbone
    return stages + [
        ("temporal conv (+pool+BN)", lambda x: encoder.temporal(x.unsqueeze(1))),
        ("ELU", F.elu),
        ("spatial conv (+BN)", encoder.spatial),
        ("ELU", F.elu),
        ("flatten + head", lambda h: encoder.head(h.flatten(1))),
    ]


def stage_profile(encoder, batch: int, n_chans: int, n_times: int, calls: int) -> list[dict]:
    """Median ms of each stage of a folded encoder on its real input, stages interleaved."""
    import numpy as np
    import torch

    stages = _stages(encoder)
    inputs = []
    with torch.inference_mode():
        h = torch.randn(batch, n_chans, n_times)
        for _, fn in stages:
            inputs.append(h)
            h = fn(h)
        times: list[list[float]] = [[] for _ in stages]
        for i in range(calls + 5):
            for k, (_, fn) in enumerate(stages):
                t = time.perf_counter()
                fn(inputs[k])
                if i >= 5:
                    times[k].append(1e3 * (time.perf_counter() - t))
    total = sum(float(np.median(t)) for t in times)
    return [{"stage": name, "ms": float(np.median(t)), "share": float(np.median(t)) / total,
             "input_shape": list(x.shape)}
            for (name, _), t, x in zip(stages, times, inputs)]


def forward_times(candidates: Sequence[str], calls: int = 100, batches: Sequence[int] = (1, 4),
                  threads: int = 1) -> dict[str, Any]:
    """Decoder.decode time (ms) of today's tvsd model and of each candidate, interleaved.

    Each model is a random-weight bundle of the ``tvsd`` model section (weights do not change
    the time); the decoder folds it and runs on ``threads`` torch threads, as the engine does.
    """
    import numpy as np
    import torch

    from neuralign.bundle import load_bundle
    from neuralign.config import load_config
    from neuralign.realtime.bench.mua import synthetic_mua_bundle
    from neuralign.realtime.inference import Decoder

    torch.set_num_threads(threads)
    names = [candidate_name(c) for c in (TODAY, *candidates)]
    decoders = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, c) in enumerate(zip(names, (TODAY, *candidates))):
            cfg = load_config("tvsd", candidate_overrides(c)).model
            bundle = load_bundle(synthetic_mua_bundle(Path(tmp) / str(i), model_config=cfg))
            decoders[name] = Decoder(bundle, batch_size=max(batches), device="cpu",
                                     torch_threads=threads)
    m = next(iter(decoders.values())).shape
    rng = np.random.default_rng(0)
    epochs = [rng.standard_normal(m[1:]).astype(np.float32) for _ in range(max(batches))]
    out: dict[str, Any] = {"threads": torch.get_num_threads(), "calls": calls, "models": {}}
    for b in batches:
        ts: dict[str, list[float]] = {n: [] for n in names}
        for i in range(calls + 5):  # round robin: each round times every model once
            for n, dec in decoders.items():
                t = time.perf_counter()
                dec.decode(epochs[:b])
                if i >= 5:
                    ts[n].append(1e3 * (time.perf_counter() - t))
        for n in names:
            out["models"].setdefault(n, {})[f"batch{b}"] = {
                "p50_ms": float(np.median(ts[n])), "p99_ms": float(np.percentile(ts[n], 99))}
        for n in names[1:]:
            out["models"][n][f"batch{b}"]["ratio_to_today"] = (
                out["models"][n][f"batch{b}"]["p50_ms"] / out["models"]["today"][f"batch{b}"]["p50_ms"])
    out["stages"] = {n: {f"batch{b}": stage_profile(dec.model.brain_encoder, b, m[1], m[2],
                                                    max(20, calls // 4)) for b in batches}
                     for n, dec in decoders.items()}
    return out


# ---- 2. and 3. retrieval ---------------------------------------------------------------------


def _simulator_digest() -> str:
    """Hash of the simulator's sources: a dataset made by other simulator code is not reused."""
    import hashlib

    from neuralign.offline import simulator

    h = hashlib.sha256()
    for f in sorted(Path(simulator.__file__).parent.glob("*.py")):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def simulated_dataset(s: MuaBenchSettings, seed: int, out: Path):
    """(config, directory) of a TVSD-like dataset; simulated unless the directory already holds
    one made from the same simulation and preprocessing settings by the same simulator code."""
    from neuralign.config import load_config
    from neuralign.offline.simulator import simulate

    config = load_config("tvsd", simulation_overrides(s, seed))
    stamp = out / "mua-bench-stamp.json"
    want = {"simulation": config.dataset.simulation.model_dump(mode="json"),
            "preprocessing": config.preprocessing.model_dump(mode="json"),
            "simulator": _simulator_digest()}
    if stamp.is_file() and (out / "simulation.json").is_file():
        if json.loads(stamp.read_text()) == want:
            return config, out
    t0 = time.perf_counter()
    simulate(config.dataset.simulation, out, preprocessing=config.preprocessing)
    stamp.write_text(json.dumps(want, indent=1))
    log.info("simulated seed %d into %s in %.0f s", seed, out, time.perf_counter() - t0)
    return config, out


def train_and_score(s: MuaBenchSettings, seed: int, prep, candidate: str,
                    run_dir: Path) -> dict[str, Any]:
    """Train one model (today's for the empty candidate) on ``prep``; score its retrieval."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from neuralign.config import load_config
    from neuralign.models import build_model
    from neuralign.offline.evaluate import Evaluator, topk
    from neuralign.offline.train import MODEL_FILE, train_model

    # the dataset section ``prep`` was prepared with, and the training budget and model
    config = load_config("tvsd", simulation_overrides(s, seed) + training_overrides(s, candidate))
    torch.set_num_threads(s.threads)
    summary = train_model(config, prep, run_dir, device=torch.device("cpu"), progress=False)
    model = build_model(config.model, n_chans=prep.x_train.shape[2], n_times=prep.x_train.shape[3],
                        feature_dim=prep.f_train.shape[1])
    model.load_state_dict(load_file(run_dir / MODEL_FILE))
    ev = Evaluator(model.eval(), prep)
    averaged = ev.decode_scores(prep.x_test.mean(axis=1))["retrieval"]
    target = np.arange(ev.n_test)
    single = [topk(ev.similarity(prep.x_test[:, r]), target) for r in range(prep.x_test.shape[1])]
    q = ev.per_image_quantities()
    return {
        "candidate": candidate_name(candidate), "train_seconds": summary["seconds"],
        "best_epoch": summary["best_epoch"], "epochs": summary["epochs"],
        "retrieval_averaged": averaged,
        "retrieval_single_trial": {k: float(np.mean([d[k] for d in single])) for k in ("top1", "top5")},
        "_hits": {k: q[k] for k in ("retrieval_top1", "retrieval_top5")},
    }


def _dataset_numbers(prep) -> dict[str, Any]:
    n_img, reps, c, t = prep.x_test.shape
    return {"n_train_images": len(prep.train_ids), "n_fit_images": len(prep.fit_index),
            "n_val_images": len(prep.val_index), "train_repetitions": int(prep.x_train.shape[1]),
            "n_test_images": n_img, "test_repetitions": reps, "n_test_trials": n_img * reps,
            "n_chans": c, "n_times": t, "chance_top1": 1.0 / n_img,
            "chance_top5": min(5, n_img) / n_img}


def choose_candidate(rows: list[dict], batch4_ms: dict[str, float]) -> str:
    """Best selection-seed retrieval: averaged top-1, then top-5, then the faster at batch 4."""
    best = max(rows, key=lambda r: (r["retrieval_averaged"]["top1"], r["retrieval_averaged"]["top5"],
                                    -batch4_ms.get(r["candidate"], 0.0)))
    return best["candidate"]


def paired_difference(new: dict, old: dict, n_boot: int = 2000) -> dict:
    """New - old per metric, with a 95 % paired bootstrap CI over test images."""
    from neuralign.offline.evaluate import bootstrap_compare

    res = bootstrap_compare(new["_hits"], old["_hits"], n_boot=n_boot)
    return {m: {"new": v["model"], "old": v["ridge"], "difference": v["difference"],
                "difference_ci95": v["difference_ci"], "significant": v["significant"]}
            for m, v in res.items()}


def run_bench(s: MuaBenchSettings, out: Path = DEFAULT_OUT,
              progress: Callable[[str], None] = print) -> dict[str, Any]:
    """All three parts (or the timing only); writes ``out/mua_encoder_bench.json``."""
    from neuralign.offline.prepare import prepare

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    result: dict[str, Any] = {"settings": asdict(s)}

    def save() -> None:
        clean = json.loads(json.dumps(result, default=_jsonable))
        (out / "mua_encoder_bench.json").write_text(json.dumps(clean, indent=1))

    timed = [s.candidate] if s.candidate else list(s.candidates)
    progress(f"forward time: today's model vs {timed}, {s.timing_calls} calls each, "
             f"{s.threads} thread(s)")
    result["forward"] = forward_times(timed, s.timing_calls, threads=s.threads)
    save()
    if s.timing_only:
        return result
    chosen = s.candidate
    if chosen is None:
        config, data = simulated_dataset(s, s.select_seed, out / f"data-seed{s.select_seed}")
        prep = prepare(config, data)
        rows = []
        for c in s.candidates:
            progress(f"selection (seed {s.select_seed}): training {c} ...")
            rows.append(train_and_score(s, s.select_seed, prep, c, out / "runs" /
                                        f"select-seed{s.select_seed}-{c.replace('=', '')}"))
            progress(f"  top-1 {rows[-1]['retrieval_averaged']['top1']:.3f} top-5 "
                     f"{rows[-1]['retrieval_averaged']['top5']:.3f} ({rows[-1]['train_seconds']:.0f} s)")
        b4 = {n: v["batch4"]["p50_ms"] for n, v in result["forward"]["models"].items()
              if "batch4" in v}
        chosen = choose_candidate(rows, b4)
        result["selection"] = {"seed": s.select_seed, "dataset": _dataset_numbers(prep),
                               "rows": rows, "chosen": chosen,
                               "rule": "highest averaged top-1 on the selection seed's test "
                                       "concepts, then top-5, then the faster at batch 4"}
        del prep
        save()
    config, data = simulated_dataset(s, s.test_seed, out / f"data-seed{s.test_seed}")
    prep = prepare(config, data)
    report: dict[str, Any] = {"seed": s.test_seed, "chosen": chosen,
                              "dataset": _dataset_numbers(prep)}
    for name, c in (("old", TODAY), ("new", chosen)):
        progress(f"report (seed {s.test_seed}): training the {name} model "
                 f"({candidate_name(c)}) ...")
        report[name] = train_and_score(s, s.test_seed, prep, c,
                                       out / "runs" / f"report-seed{s.test_seed}-{name}")
    report["paired_bootstrap"] = paired_difference(report["new"], report["old"])
    result["report"] = report
    result["seconds"] = time.perf_counter() - t_start
    save()
    return result


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.ndarray):
        return None  # per-image hit arrays are not worth the file size
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON: {type(obj).__name__}")


def format_summary(res: dict[str, Any]) -> str:
    """Human-readable lines: forward time per model and batch, then retrieval."""
    lines = []
    fw = res["forward"]
    lines.append(f"Decoder.decode forward, {fw['threads']} thread(s), median (p99) ms, "
                 f"{fw['calls']} interleaved calls:")
    for name, row in fw["models"].items():
        cells = [f"batch {k[5:]}: {v['p50_ms']:6.2f} ({v['p99_ms']:6.2f})"
                 + (f" x{v['ratio_to_today']:.3f}" if "ratio_to_today" in v else "")
                 for k, v in row.items()]
        lines.append(f"  {name:22s} " + "   ".join(cells))
    if "selection" in res:
        sel = res["selection"]
        lines.append(f"Selection on seed {sel['seed']} ({sel['dataset']['n_test_images']}-way): "
                     + ", ".join(f"{r['candidate']} top-1 "
                                 f"{r['retrieval_averaged']['top1']:.3f}" for r in sel["rows"])
                     + f" -> {sel['chosen']}")
    if "report" in res:
        rep = res["report"]
        d = rep["dataset"]
        lines.append(f"Report on seed {rep['seed']}: {d['n_test_images']} test images x "
                     f"{d['test_repetitions']} repetitions = {d['n_test_trials']} test trials; "
                     f"chance top-1 {d['chance_top1']:.3f}, top-5 {d['chance_top5']:.3f}")
        for name in ("old", "new"):
            r = rep[name]
            a, st = r["retrieval_averaged"], r["retrieval_single_trial"]
            lines.append(f"  {name} ({r['candidate']}): averaged top-1 "
                         f"{a['top1']:.3f} top-5 {a['top5']:.3f}; single trial top-1 "
                         f"{st['top1']:.3f} top-5 {st['top5']:.3f}; trained {r['train_seconds']:.0f} s")
        for m, v in rep["paired_bootstrap"].items():
            lo, hi = v["difference_ci95"]
            lines.append(f"  new - old {m}: {v['difference']:+.3f} [95 % CI {lo:+.3f}, {hi:+.3f}]")
    return "\n".join(lines)
