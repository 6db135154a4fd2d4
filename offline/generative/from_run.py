"""Paired data from a retrieval run: the stimulus images paired with the run's brain embeddings.

Why: a live bundle's generator takes what the engine already computes for every epoch, the
retrieval model's L2-normalised brain embedding ``zb = normalize(encode_brain(epoch))`` (see
:class:`neuralign.realtime.inference.Decoder`), so generation costs one small extra forward and
needs no second preprocessing path. A generator for a bundle is therefore trained on
``paired.npz`` whose responses are those embeddings of the run's own prepared epochs (the exact
arrays it was trained on) and whose images are the run's stimulus images.

``trials``:
- ``"single"`` (default): one row per presentation (its single-trial embedding), the distribution
  the engine feeds the generator live;
- ``"average"``: one row per image, the repetition-averaged embeddings (``(N, R, M)`` in the file;
  :func:`~neuralign.offline.generative.paired.prepare_paired` averages them).

Unit names are ``zb0 .. zb{M-1}``: :func:`check_embedding_source` (``neuralign export
--generator``) recomputes the first rows from a run to prove a generator was trained on it.

``responses="epochs"`` pairs the images with the run's noise-normalised epochs flattened to
C x T values instead (``CH@MSms`` unit names): what FLIG / SMR see without BrainAE's encoder, for
offline comparison only (a bundle's generator must take embeddings). FLIG's flows and auto-encoder
code have the response dimension, so keep C x T small (e.g. a decimated epoch) for FLIG.
The run's classification templates (non-stimulus images of the test concepts) are written as
``extra_images``, ICG's unpaired augmentation set.

``neuralign paired --run RUN --out paired.npz [--responses embedding|epochs] [--trials ...]``
calls :func:`paired_from_run`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np

from neuralign.errors import UserError, require_file
from neuralign.offline.run_dir import load_run

log = logging.getLogger(__name__)

UNIT_PREFIX = "zb"
PAIRED_FILE = "paired.npz"


def load_stimulus_images(image_files: dict[str, str], ids: list[str], size: int) -> np.ndarray:
    """(n, size, size, 3) uint8 RGB stimuli in ``ids`` order; a missing file is one DataError."""
    from PIL import Image

    out = np.zeros((len(ids), size, size, 3), np.uint8)
    for i, img_id in enumerate(ids):
        path = require_file(image_files.get(img_id) or "<no file>",
                            f"image {img_id!r}: file not found (the run's prepared.npz names the "
                            "stimulus files; were they moved?)")
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.LANCZOS)
            out[i] = np.asarray(im)
    return out


def brain_embeddings(model, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """L2-normalised ``encode_brain`` of epochs ``x`` (..., C, T) -> (..., M) float32, exactly
    the vector the engine's decoder computes (eval mode, no gradient)."""
    import torch

    lead, (c, t) = x.shape[:-2], x.shape[-2:]
    flat = torch.from_numpy(np.ascontiguousarray(x.reshape(-1, c, t), np.float32))
    model.eval()
    with torch.no_grad():
        z = torch.cat([torch.nn.functional.normalize(model.encode_brain(flat[i:i + batch]), dim=-1)
                       for i in range(0, len(flat), batch)])
    return z.numpy().reshape(*lead, -1).astype(np.float32)


def paired_from_run(run_dir: Path, out: Path | None = None, image_size: int = 64,
                    trials: Literal["single", "average"] = "single",
                    responses: Literal["embedding", "epochs"] = "embedding") -> Path:
    """Write ``paired.npz`` (default ``run_dir/paired.npz``) from a BrainAE/VNA run: train rows
    from the run's training images, test rows from its (zero-shot) test images; responses are
    the run's brain embeddings or its flattened epochs."""
    if trials not in ("single", "average"):
        raise UserError(f"trials: expected 'single' or 'average', got {trials!r}")
    if responses not in ("embedding", "epochs"):
        raise UserError(f"responses: expected 'embedding' or 'epochs', got {responses!r}")
    run_dir = Path(run_dir)
    if responses == "epochs":
        from neuralign.offline.prepare import Prepared

        prep, model = Prepared.load(run_dir / "prepared.npz"), None
    else:
        _, prep, model = load_run(run_dir)
        if not hasattr(model, "encode_brain"):
            raise UserError(f"{run_dir}: the model has no brain encoder (encode_brain); paired data "
                            "from a run needs a BrainAE or VNA run")
    files = prep.meta.get("image_files", {})
    arrays: dict[str, np.ndarray] = {}
    for split, x, ids in (("train", prep.x_train, prep.train_ids), ("test", prep.x_test, prep.test_ids)):
        if model is None:  # (N, R, C, T) -> (N, R, C*T)
            z = np.ascontiguousarray(x.reshape(*x.shape[:2], -1), np.float32)
        else:
            z = brain_embeddings(model, x)  # (N, R, M)
        images = load_stimulus_images(files, ids, image_size)
        if trials == "single":
            n, r = z.shape[:2]
            arrays[f"{split}_responses"] = z.reshape(n * r, -1)
            arrays[f"{split}_images"] = np.repeat(images, r, axis=0)
        else:
            arrays[f"{split}_responses"] = z
            arrays[f"{split}_images"] = images
    m = arrays["train_responses"].shape[-1]
    if model is None:
        arrays["unit_names"] = np.array([f"{c}@{t * 1000:.0f}ms" for c in prep.ch_names for t in prep.times])
    else:
        arrays["unit_names"] = np.array([f"{UNIT_PREFIX}{i}" for i in range(m)])
    if prep.template_ids and all(Path(files.get(i) or "").is_file() for i in prep.template_ids):
        arrays["extra_images"] = load_stimulus_images(files, prep.template_ids, image_size)
    out = Path(out) if out is not None else run_dir / PAIRED_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    log.info("paired data (%s trials, %d train / %d test rows, %d %s units) written to %s", trials,
             len(arrays["train_responses"]), len(arrays["test_responses"]), m, responses, out)
    return out


def stimulus_truth(run_dir: Path, ids: list[str], size: int, grayscale: bool) -> dict[str, np.ndarray]:
    """The true images of ``ids`` exactly as the generator was trained to produce them (same
    loader, same resize / grey conversion), for scoring generated images of live epochs."""
    from neuralign.offline.generative.paired import resize_images, to_unit_float
    from neuralign.offline.prepare import Prepared

    prep = Prepared.load(Path(run_dir) / "prepared.npz")
    imgs = resize_images(to_unit_float(load_stimulus_images(prep.meta.get("image_files", {}), ids,
                                                            size), "stimuli"), size, grayscale)
    return dict(zip(ids, imgs))


def check_embedding_source(brain_run: Path, paired, n_check: int = 4, atol: float = 1e-4) -> None:
    """UserError unless ``paired`` (a generator run's PairedData) holds the embeddings of
    ``brain_run``'s training epochs: a generator only makes sense on its own retrieval model."""
    names = list(paired.unit_names)
    if not names or not all(n == f"{UNIT_PREFIX}{i}" for i, n in enumerate(names)):
        raise UserError("the generator run was not trained on brain embeddings (its paired.npz "
                        "unit names are not zb0..zbM); build its data with paired_from_run")
    _, prep, model = load_run(brain_run)
    x = prep.x_train[:n_check]
    z = brain_embeddings(model, x)  # (n, R, M)
    r = x.shape[1]
    train = paired.train_responses
    if train.shape[1] != z.shape[-1]:
        raise UserError(f"the generator takes {train.shape[1]} inputs but {brain_run}'s embedding "
                        f"has {z.shape[-1]} dimensions")
    single = train[: n_check * r].reshape(n_check, r, -1) if len(train) >= n_check * r else None
    if single is not None and np.allclose(single, z, atol=atol):
        return
    if np.allclose(train[:n_check], z.mean(axis=1), atol=atol):
        return
    raise UserError(f"the generator run was not trained on {brain_run}'s embeddings (the first "
                    "training rows differ): retrain it on paired_from_run of that run")


def validate_generator(model, paired):
    """:class:`~neuralign.bundle.GeneratorValidation` of a generator on its run's test rows
    (held out of its training), against the mean of its training images."""
    from neuralign.bundle import GeneratorValidation
    from neuralign.offline.generative.baselines import mean_image
    from neuralign.offline.generative.metrics import decoding_metrics
    from neuralign.offline.generative.scores import two_way_identification

    decoded = model.generate(paired.test_responses)
    mean = mean_image(paired.train_images, len(paired.test_images))
    return GeneratorValidation(
        split="test images", n_images=len(paired.test_images),
        ssim=decoding_metrics(decoded, paired.test_images)["ssim"],
        ssim_mean_image=decoding_metrics(mean, paired.test_images)["ssim"],
        two_way_pixel=float(two_way_identification(decoded, paired.test_images).mean()))


def generator_for_bundle(brain_run: Path, generator_run: Path):
    """(GeneratorSection, state dict) of a generator run for the bundle of ``brain_run``, after
    checking the generator was trained on that run's brain embeddings."""
    from neuralign.bundle import GeneratorSection
    from neuralign.offline.generative.runs import is_generative_run, load_generative

    generator_run = Path(generator_run)
    if not is_generative_run(generator_run):
        raise UserError(f"--generator {generator_run}: not a flig / smr_icg run directory "
                        "(its config.yaml names no generative model)")
    config, paired, model = load_generative(generator_run)
    check_embedding_source(brain_run, paired)
    import json

    from neuralign.bundle import GeneratorValidation

    history = generator_run / "history.json"
    saved = json.loads(history.read_text()).get("validation") if history.is_file() else None
    validation = (GeneratorValidation.model_validate(saved) if saved
                  else validate_generator(model, paired))
    if not validation.beats_mean_image:
        log.warning("%s: %s", generator_run, validation.reason())
    section = GeneratorSection(kind=config.model.name,
                               config=config.generative.model_dump(mode="json"),
                               input="brain_embedding", n_inputs=paired.n_units,
                               image_size=int(paired.image_shape[0]), channels=paired.n_channels,
                               validation=validation)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return section, state


def train_run_generator(brain_run: Path, config, out: Path,
                        trials: Literal["single", "average"] = "single") -> dict:
    """Paired data from ``brain_run``'s brain embeddings, then the generator of ``config``
    (flig | smr_icg | prior_map) on it, written as a generative run in ``out``; returns its
    history plus ``validation`` (scores on the held-out test rows against the mean training
    image, also saved in history.json for the bundle's gate) and ``seconds_total``."""
    import json
    import time

    from neuralign.offline.generative.runs import load_generative, train_generative

    out = Path(out)
    t0 = time.perf_counter()
    paired = paired_from_run(brain_run, out / "paired_from_run.npz",
                             image_size=config.generative.image_size, trials=trials)
    history = train_generative(config, paired, out)
    _, data, model = load_generative(out)
    history["validation"] = validate_generator(model, data).model_dump(mode="json")
    (out / "history.json").write_text(json.dumps(history, indent=1))
    history["seconds_total"] = time.perf_counter() - t0
    return history


def stimulus_truth_for_bundle(brain_run: Path, bundle) -> dict[str, np.ndarray] | None:
    """:func:`stimulus_truth` of a bundle's template images at its generator's size (None
    without a generator)."""
    g = bundle.manifest.generator
    if g is None:
        return None
    return stimulus_truth(brain_run, bundle.template_ids, g.image_size, g.channels == 1)


def mean_training_image(brain_run: Path, bundle) -> np.ndarray:
    """The mean of ``brain_run``'s training stimuli at the bundle generator's size: the image a
    generator that ignores the brain would show (the live line's floor)."""
    from neuralign.offline.prepare import Prepared

    g = bundle.manifest.generator
    prep = Prepared.load(Path(brain_run) / "prepared.npz")
    imgs = stimulus_truth(brain_run, list(prep.train_ids), g.image_size, g.channels == 1)
    return np.mean(np.stack(list(imgs.values())), axis=0).astype(np.float32)


class LiveSSIM:
    """Running scores of live generated images against the true stimulus of their epoch (the
    demo's live line), beside the two images a viewer could be shown instead: the mean training
    image (``mean_image``; ignores the brain) and the retrieved top-1 template of the same epoch.
    Each is scored by SSIM and by 2-way identification (is the image more correlated with its
    own stimulus than with another test image's? 0.5 = chance; averaged over all others)."""

    def __init__(self, truth: dict[str, np.ndarray], mean_image: np.ndarray | None = None):
        self.truth = truth
        self._ids = sorted(truth)
        self._truth_rows = np.stack([truth[i].reshape(-1) for i in self._ids]).astype(np.float64)
        self.mean_image = mean_image
        self._seen: set[int] = set()
        self.scores: dict[str, dict[str, list[float]]] = {
            k: {"ssim": [], "two_way": []} for k in ("generated", "mean_image", "retrieved")}

    def _two_way(self, image: np.ndarray, marker: str) -> float:
        x = image.reshape(-1).astype(np.float64)
        x = x - x.mean()
        t = self._truth_rows - self._truth_rows.mean(axis=1, keepdims=True)
        den = np.sqrt((t * t).sum(1) * (x * x).sum())
        r = np.where(den > 0, t @ x / np.where(den > 0, den, 1), 0.0)
        i = self._ids.index(marker)
        others = np.delete(r, i)
        return float(((r[i] > others) + 0.5 * (r[i] == others)).mean()) if len(others) else 0.5

    def _add(self, kind: str, image: np.ndarray, marker: str) -> None:
        from skimage.metrics import structural_similarity

        true = self.truth[marker]
        kw = {"data_range": 1.0, "channel_axis": -1 if true.ndim == 3 else None}
        self.scores[kind]["ssim"].append(float(structural_similarity(true, image, **kw)))
        self.scores[kind]["two_way"].append(self._two_way(image, marker))

    def update(self, generated, results=()) -> None:
        """Score every not yet scored ``Generated`` (epoch_id, marker, image) with a known
        truth; ``results`` (the engine's :class:`Result` list) give each epoch's top-1."""
        top1 = {r.epoch_id: r.topk_ids[0] for r in list(results) if r.topk_ids}
        for g in list(generated):
            if g.epoch_id in self._seen or g.marker not in self.truth:
                continue
            self._seen.add(g.epoch_id)
            self._add("generated", np.asarray(g.image, np.float32), g.marker)
            if self.mean_image is not None:
                self._add("mean_image", self.mean_image, g.marker)
            if top1.get(g.epoch_id) in self.truth:
                self._add("retrieved", self.truth[top1[g.epoch_id]], g.marker)

    def summary(self) -> dict:
        """``{"n": 0}`` before any scored image; else ``n`` and, per image kind with scores,
        its mean ``ssim`` and ``two_way``."""
        n = len(self.scores["generated"]["ssim"])
        out: dict = {"n": n}
        if n:
            for kind, sc in self.scores.items():
                if sc["ssim"]:
                    out[kind] = {"ssim": float(np.mean(sc["ssim"])),
                                 "two_way": float(np.mean(sc["two_way"])), "n": len(sc["ssim"])}
        return out

    def line(self) -> str:
        s = self.summary()
        if not s["n"]:
            return "  generated images: none scored yet"
        parts = [f"{name} SSIM {s[k]['ssim']:.3f} / 2-way {s[k]['two_way']:.2f}"
                 for k, name in (("generated", "generated"), ("mean_image", "mean image"),
                                 ("retrieved", "retrieved top-1")) if k in s]
        return f"  over {s['n']} generated images: " + "; ".join(parts)
