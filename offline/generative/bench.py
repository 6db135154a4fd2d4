"""``neuralign bench generative``: the generative decoders against equally tuned baselines on
fresh simulator seeds, with 95 % confidence intervals.

The protocol (docs/generative_protocol.md):

- **Development and report seeds are declared.** Configs were set on the development seeds
  (``DEV_SEEDS``; seed 0 is the one the shipped configs' comments were measured on). Reported
  numbers come from the report seeds (``REPORT_SEEDS``), which no setting was chosen on; the
  bench refuses a development seed unless ``--dev`` (and then says so in the table).
- **Every decoder sees the same data**: per family and seed one simulated dataset, test images
  never used for fitting or choosing anything (each decoder chooses its own settings by
  cross-validation or held-out rows of the training set).
- **Baselines tuned as carefully as the models**: ridge with a quarter-decade alpha grid by
  efficient leave-one-out, and with one alpha per pixel; the two floors (the mean training image,
  and the training image whose responses are nearest: retrieval); with a FLIG run, a ridge into
  FLIG's own auto-encoder codes decoded by its decoder (FLIG without its flows).
- **Statistics**: per decoder the mean over seeds of the per-image scores with a hierarchical
  bootstrap CI (seeds, then images), and for every pair the paired bootstrap of per-image
  differences on the seeds both have.

FLIG and SMR+ICG runs are the ``neuralign train`` runs of their shipped configs, kept in the cache
(``runs/<family>-s<seed>/<decoder>``) and trained when missing (about 10 minutes each on 2 CPU
cores); ``--no-train`` scores only the runs that exist.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEV_SEEDS = (0, 101, 102)
REPORT_SEEDS = (201, 202, 203, 204, 205)
FAMILIES = ("lnp", "subunit", "voxels", "digits")
FLOORS = ("mean_image", "retrieved")
FAST = ("mean_image", "retrieved", "ridge", "ridge_per_pixel", "prior_map")
# Generator kinds (models.generators registry) scored from trained runs of their shipped configs.
# A protocol choice, spelled out rather than read from the registry: the CLI builds this
# module's defaults at start-up, and the registry imports torch and every model.
SLOW = ("flig", "smr_icg")
#: the prior MAP decoder's ablations (not run by default): its prior trained without the unpaired
#: images; and without its likelihood (mu so large that decoding only denoises the ridge start)
ABLATIONS = {"prior_map_no_extra": {"use_extra_images": False},
             "ridge_denoised": {"mu_grid": [1e6]}}
DEFAULT_DECODERS = FAST + SLOW
DEFAULT_OUT = Path(".neuralign-cache/bench-generative")
METRICS = ("ssim", "pcc", "two_way_pixel", "two_way_feature")


@dataclass
class DecoderScores:
    """One decoder on one family and seed: per-image scores and set-level ones."""

    decoder: str
    family: str
    seed: int
    per_image: dict[str, list[float]]  # METRICS -> per test image
    sharpness: float
    diversity: float
    seconds: float = 0.0
    note: str = ""


@dataclass
class Row:
    """A decoder over seeds: means with 95 % CIs, and paired differences against the others."""

    decoder: str
    n_seeds: int
    mean: dict[str, float]
    ci: dict[str, tuple[float, float]]
    sharpness: float
    diversity: float
    # other decoder -> (mean SSIM difference this - other, lo, hi, n_seeds in common)
    ssim_vs: dict[str, tuple[float, float, float, int]] = field(default_factory=dict)
    two_way_vs: dict[str, tuple[float, float, float, int]] = field(default_factory=dict)


def simulate(family: str, seed: int, out: Path) -> Path:
    """The family's default simulated dataset of ``seed`` (cached): its ``paired.npz``."""
    from neuralign import generative_config as G

    paired = out / "paired.npz"
    if paired.is_file():
        return paired
    if family in ("lnp", "subunit"):
        from neuralign.offline.simulator.retina import simulate_retina

        simulate_retina(G.RetinaSimConfig(cell_model=family), out, seed=seed)
    elif family == "voxels":
        from neuralign.offline.simulator.voxels import simulate_voxels

        simulate_voxels(G.VoxelSimConfig(), out, seed=seed)
    elif family == "digits":
        from neuralign.offline.simulator.digits import simulate_digits

        simulate_digits(G.DigitsSimConfig(), out, seed=seed)
    else:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return paired


def _slow_run(decoder: str, paired_file: Path, run_dir: Path, train: bool) -> np.ndarray | None:
    """Decoded test images of the shipped config's run (trained when missing and ``train``)."""
    decoded = run_dir / "decoded_test.npy"
    if not decoded.is_file():
        if not train:
            return None
        from neuralign.config import load_config
        from neuralign.offline.generative.runs import evaluate_generative, train_generative

        train_generative(load_config(decoder), paired_file, run_dir)
        evaluate_generative(run_dir)
    return np.load(decoded)


def _cae_codes_maps(run_dir: Path) -> dict[str, np.ndarray]:
    """FLIG without its flows: deterministic maps from responses into the run's auto-encoder
    codes, decoded by its decoder. ``ridge_cae_codes``: the tuned ridge; ``mlp_cae_codes``: a
    one-hidden-layer MLP (scikit-learn, early stopping on 10 % of the training rows). These are
    what the flows must beat."""
    import torch
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from neuralign.offline.generative.baselines import ridge_into_codes
    from neuralign.offline.generative.runs import load_generative

    _, data, model = load_generative(run_dir)
    x = torch.as_tensor(data.train_images, dtype=torch.float32)
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    with torch.no_grad():
        codes = torch.cat([model.enc(x[i:i + 256]) for i in range(0, len(x), 256)]).numpy()
    flat = codes.reshape(len(codes), -1)
    mlp = make_pipeline(StandardScaler(), MLPRegressor(
        hidden_layer_sizes=(256,), alpha=1e-3, early_stopping=True, max_iter=500, random_state=0))
    preds = {"ridge_cae_codes": ridge_into_codes(data.train_responses, flat, data.test_responses),
             "mlp_cae_codes": mlp.fit(data.train_responses, flat).predict(data.test_responses)}
    out = {}
    for name, pred in preds.items():
        with torch.no_grad():
            img = model.dec(torch.as_tensor(pred, dtype=torch.float32).view(-1, *codes.shape[1:]))
        img = img.permute(0, 2, 3, 1).numpy()
        out[name] = img[..., 0] if img.shape[-1] == 1 else img
    return out


def _cvae_images(run_dir: Path) -> np.ndarray:
    """ICG without its introspective terms: the run's CVAE special case (alpha 0, beta 1),
    trained beside ICG with the same epochs, conditions and validation, on the same SMR
    predictions of the test features."""
    from neuralign.offline.generative.runs import load_generative

    _, data, model = load_generative(run_dir)
    return model.images_from_features(model.predict_features(data.test_responses), which="cvae")


def decode_all(family: str, seed: int, decoders: Sequence[str], out: Path, train_slow: bool,
               prior_config=None) -> list[DecoderScores]:
    """Every requested decoder on one dataset, scored on its test images."""
    import torch

    from neuralign.offline.generative import baselines as B
    from neuralign.offline.generative.paired import load_paired_npz
    from neuralign.offline.generative.scores import feature_space, score_images

    data_dir = out / "data" / f"{family}-s{seed}"
    paired_file = simulate(family, seed, data_dir)
    p = load_paired_npz(paired_file)
    features = feature_space()
    images: dict[str, tuple[np.ndarray, float, str]] = {}
    for dec in decoders:
        t0 = time.perf_counter()
        note = ""
        if dec == "mean_image":
            img = B.mean_image(p.train_images, len(p.test_images))
        elif dec == "retrieved":
            img = B.retrieved_template(p.train_responses, p.train_images, p.test_responses)
        elif dec in ("ridge", "ridge_per_pixel"):
            r = B.tuned_ridge(p.train_responses, p.train_images, p.test_responses,
                              per_pixel=dec == "ridge_per_pixel")
            img, note = r.images, f"alpha {r.alpha:g} ({r.cv})"
        elif dec == "prior_map" or dec in ABLATIONS:
            from neuralign.config import load_config
            from neuralign.offline.generative.prior_map_train import train_prior_map

            cfg = prior_config or load_config("prior_map").generative.prior_map
            cfg = cfg.model_copy(update=ABLATIONS.get(dec, {}))
            torch.set_num_threads(1)
            model, hist = train_prior_map(p.train_images, p.train_responses, cfg,
                                          torch.device("cpu"), seed=2024,
                                          extra_images=p.extra_images,
                                          denoiser_cache=out / "denoisers")
            img = model.generate(p.test_responses)
            note = f"{hist.likelihood} likelihood, mu {hist.mu:g}, blend {hist.blend:g}"
        elif dec in SLOW:
            img = _slow_run(dec, paired_file, out / "runs" / f"{family}-s{seed}" / dec, train_slow)
            if img is None:
                continue
            run = out / "runs" / f"{family}-s{seed}" / dec
            if dec == "flig":
                for name, imgs in _cae_codes_maps(run).items():
                    images[name] = (imgs, 0.0, f"{name.split('_')[0]} into FLIG's auto-encoder codes")
            else:
                images["cvae"] = (_cvae_images(run), 0.0,
                                  "ICG with alpha 0 (no introspective terms), same run")
        else:
            raise ValueError(f"unknown decoder {dec!r}; known: "
                             f"{', '.join(DEFAULT_DECODERS + tuple(ABLATIONS))}")
        images[dec] = (img, time.perf_counter() - t0, note)
    out_scores = []
    for dec, (img, seconds, note) in images.items():
        s = score_images(img, p.test_images, features)
        out_scores.append(DecoderScores(
            decoder=dec, family=family, seed=seed,
            per_image={m: [float(v) for v in getattr(s, m)] for m in METRICS},
            sharpness=float(s.sharpness), diversity=float(s.diversity), seconds=seconds, note=note))
        log.info("%s seed %d %s: SSIM %.4f (%s)", family, seed, dec, np.mean(s.ssim), note)
    return out_scores


def aggregate(scores: list[DecoderScores]) -> list[Row]:
    """Rows of one family: means with CIs over seeds, paired differences between decoders."""
    from neuralign.offline.generative.scores import mean_ci, paired_bootstrap

    by_dec: dict[str, dict[int, DecoderScores]] = {}
    for s in scores:
        by_dec.setdefault(s.decoder, {})[s.seed] = s
    rows = []
    for dec, seeds in by_dec.items():
        mean, ci = {}, {}
        for m in METRICS:
            c = mean_ci([np.asarray(seeds[k].per_image[m]) for k in sorted(seeds)])
            mean[m], ci[m] = c.mean, (c.lo, c.hi)
        row = Row(decoder=dec, n_seeds=len(seeds), mean=mean, ci=ci,
                  sharpness=float(np.mean([s.sharpness for s in seeds.values()])),
                  diversity=float(np.mean([s.diversity for s in seeds.values()])))
        for other, oseeds in by_dec.items():
            common = sorted(set(seeds) & set(oseeds))
            if other == dec or not common:
                continue
            for metric, target in (("ssim", row.ssim_vs), ("two_way_pixel", row.two_way_vs)):
                d = paired_bootstrap([np.asarray(seeds[k].per_image[metric])
                                      - np.asarray(oseeds[k].per_image[metric]) for k in common])
                target[other] = (d.mean, d.lo, d.hi, len(common))
        rows.append(row)
    order = {d: i for i, d in enumerate(FLOORS + ("ridge", "ridge_per_pixel", "ridge_cae_codes",
                                                  "mlp_cae_codes",
                                                  "flig", "cvae", "smr_icg", "ridge_denoised",
                                                  "prior_map_no_extra", "prior_map"))}
    return sorted(rows, key=lambda r: order.get(r.decoder, 99))


def _ci(mean: float, lo: float, hi: float) -> str:
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


def format_table(family: str, rows: list[Row], dev: bool) -> str:
    """Markdown table of one family (SSIM and its difference to the best ridge and the mean)."""
    ridges = [r for r in rows if r.decoder in ("ridge", "ridge_per_pixel")]
    best = max(ridges, key=lambda r: r.mean["ssim"]).decoder if ridges else None
    lines = [f"**{family}**" + (" (DEVELOPMENT seeds: not a report)" if dev else ""), "",
             "| decoder | seeds | SSIM [95 % CI] | pixel r | 2-way pixel | 2-way feature | "
             f"sharpness | diversity | SSIM - {best or 'ridge'} [95 % CI] | SSIM - mean image |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        vs = r.ssim_vs.get(best) if best and r.decoder != best else None
        vm = r.ssim_vs.get("mean_image") if r.decoder != "mean_image" else None
        lines.append(
            f"| {r.decoder} | {r.n_seeds} | {_ci(r.mean['ssim'], *r.ci['ssim'])} | "
            f"{r.mean['pcc']:.3f} | {r.mean['two_way_pixel']:.3f} | {r.mean['two_way_feature']:.3f} | "
            f"{r.sharpness:.2f} | {r.diversity:.2f} | "
            f"{_ci(vs[0], vs[1], vs[2]) if vs else '-'} | {_ci(vm[0], vm[1], vm[2]) if vm else '-'} |")
    return "\n".join(lines)


def run_bench(families: Sequence[str], seeds: Sequence[int], decoders: Sequence[str], out: Path,
              train_slow: bool = True, dev: bool = False, prior_config=None,
              report_only: bool = False) -> dict:
    """Decode, score and aggregate; writes OUT/bench_generative.json and .md; returns the JSON.
    ``prior_config``: the prior MAP decoder's settings (default: configs/prior_map.yaml);
    ``report_only``: decode nothing, tabulate what ``scores.jsonl`` holds for these seeds."""
    bad = sorted(set(seeds) & set(DEV_SEEDS))
    if bad and not dev:
        from neuralign.errors import UserError

        raise UserError(f"seeds {bad} are development seeds (settings were chosen on them): "
                        f"report on fresh ones (default {list(REPORT_SEEDS)}) or pass --dev")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    per_seed_file = out / "scores.jsonl"
    done: dict[tuple[str, int, str], DecoderScores] = {}
    if per_seed_file.is_file():  # resumable: every scored (family, seed, decoder) is kept
        for line in per_seed_file.read_text().splitlines():
            s = DecoderScores(**json.loads(line))
            done[(s.family, s.seed, s.decoder)] = s
    for family in families:
        for seed in seeds:
            todo = [d for d in decoders if (family, seed, d) not in done]
            if not todo or report_only:
                continue
            for s in decode_all(family, seed, todo, out, train_slow, prior_config):
                done[(s.family, s.seed, s.decoder)] = s
                with per_seed_file.open("a") as f:
                    f.write(json.dumps(asdict(s)) + "\n")
    report: dict = {"seeds": list(seeds), "development": dev, "decoders": list(decoders),
                    "families": {}}
    tables = []
    wanted = (set(decoders) | ({"ridge_cae_codes", "mlp_cae_codes"} if "flig" in decoders else set())
              | ({"cvae"} if "smr_icg" in decoders else set()))
    for family in families:
        scores = [s for (f, seed, d), s in done.items() if f == family and seed in seeds and d in wanted]
        rows = aggregate(scores)
        report["families"][family] = {
            "rows": [asdict(r) for r in rows],
            "notes": {f"{s.decoder} seed {s.seed}": s.note for s in scores if s.note}}
        tables.append(format_table(family, rows, dev))
    report["table"] = "\n\n".join(tables)
    (out / "bench_generative.json").write_text(json.dumps(report, indent=1))
    (out / "bench_generative.md").write_text(report["table"] + "\n")
    return report
