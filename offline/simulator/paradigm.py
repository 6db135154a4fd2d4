"""The simulated experiment: concepts, latent vectors, image features and the RSVP timelines.

Everything the brain signals depend on is derived here from one ``numpy.random.Generator``, so a
seed fixes the whole dataset. Each concept has a latent ``z_c``; each image ``z_i = z_c + noise``
(within-concept variation). Image render parameters (shape, colour, grating, position...) are a
fixed nonlinear map of ``z_i``, so images of one concept look alike and concepts differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neuralign.config import SimulationConfig

# Within-concept spread of image latents, relative to the unit spread of concept latents.
WITHIN_CONCEPT_SD = 0.45
# Names of the render parameters, each in [0, 1] (see images.render_image).
RENDER_PARAMS = (
    "n_vertices", "hue", "saturation", "size", "rotation", "grating_orientation",
    "grating_frequency", "grating_contrast", "background", "pos_x", "pos_y",
)

_SYLLABLES = (
    "ka", "lo", "mi", "ne", "ru", "ta", "vo", "si", "pe", "da", "gu", "fi", "zo", "be", "ho",
    "ja", "wu", "te", "ni", "ro", "sa", "ku", "me", "lu", "po", "xi", "ye", "du", "ga", "fo",
)


def concept_name(index: int) -> str:
    """THINGS-style folder name ``00012_rokate``: 1-based index + a pronounceable pseudo-word."""
    rng = np.random.default_rng(1_000_003 * index + 17)  # independent of the seed: stable names
    n_syll = int(rng.integers(2, 4))
    word = "".join(_SYLLABLES[int(i)] for i in rng.integers(0, len(_SYLLABLES), n_syll))
    return f"{index:05d}_{word}"


@dataclass
class Paradigm:
    """All images of the experiment, in a fixed order: train, then test, then template images.

    ``split`` is 'train' / 'test' / 'template'; ``z`` the image latents (n, latent_dim),
    ``concept_z`` the concept latents per image, ``render`` the render parameters in [0, 1]
    (n, len(RENDER_PARAMS)) and ``low_level`` the z-scored image-computable features that early
    visual sources are tuned to.
    """

    image_ids: list[str]
    concepts: list[str]
    split: np.ndarray
    z: np.ndarray
    concept_z: np.ndarray
    render: np.ndarray
    low_level: np.ndarray

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)


def _low_level_features(render: np.ndarray) -> np.ndarray:
    """Image-computable features: circular params as cos/sin, the rest as is; z-scored."""
    cols = []
    for k, name in enumerate(RENDER_PARAMS):
        v = render[:, k]
        if name in ("hue", "rotation", "grating_orientation"):
            # Circular: hue over 2*pi, orientations over pi (as cos/sin of the doubled angle).
            cols += [np.cos(2 * np.pi * v), np.sin(2 * np.pi * v)]
        else:
            cols.append(v)
    feats = np.stack(cols, axis=1)
    feats = feats - feats.mean(0)
    sd = feats.std(0)
    return feats / np.where(sd > 0, sd, 1.0)


def make_paradigm(cfg: SimulationConfig, rng: np.random.Generator) -> Paradigm:
    """Draw concepts, the zero-shot split, image latents and render parameters."""
    n_tr, n_te = cfg.n_train_concepts, cfg.n_test_concepts
    # Concept indices 1..n_tr+n_te, test concepts scattered among them as in THINGS.
    order = rng.permutation(n_tr + n_te) + 1
    train_idx, test_idx = np.sort(order[:n_tr]), np.sort(order[n_tr:])
    concept_latent = {int(c): rng.standard_normal(cfg.latent_dim) for c in np.sort(order)}
    # Fixed map latent -> render parameters (a random linear mix then a sigmoid).
    mix = rng.standard_normal((len(RENDER_PARAMS), cfg.latent_dim)) * (1.6 / np.sqrt(cfg.latent_dim))
    offset = rng.uniform(-0.3, 0.3, len(RENDER_PARAMS))

    ids, concepts, split, zs, czs = [], [], [], [], []

    def add(c: int, n_images: int, first: int, kind: str) -> None:
        for i in range(first, first + n_images):
            z_c = concept_latent[c]
            ids.append(f"c{c:04d}_i{i:02d}")
            concepts.append(concept_name(c))
            split.append(kind)
            zs.append(z_c + WITHIN_CONCEPT_SD * rng.standard_normal(cfg.latent_dim))
            czs.append(z_c)

    for c in train_idx:
        add(int(c), cfg.images_per_train_concept, 0, "train")
    for c in test_idx:
        add(int(c), 1, 0, "test")
    for c in test_idx:
        add(int(c), cfg.template_images_per_test_concept, 1, "template")
    z = np.asarray(zs)
    render = 1.0 / (1.0 + np.exp(-(z @ mix.T + offset)))
    return Paradigm(
        image_ids=ids, concepts=concepts, split=np.asarray(split), z=z,
        concept_z=np.asarray(czs), render=render, low_level=_low_level_features(render),
    )


@dataclass
class Timeline:
    """One continuous RSVP session: which image (paradigm index) starts at which sample."""

    image_index: np.ndarray  # (n_trials,) index into the Paradigm
    repetition: np.ndarray  # (n_trials,) 0-based repetition block
    onset_sample: np.ndarray  # (n_trials,) int64
    n_samples: int


def make_timeline(
    images: np.ndarray, repetitions: int, cfg: SimulationConfig, rng: np.random.Generator,
    lead_in_s: float = 2.0, tail_s: float = 1.5,
) -> Timeline:
    """RSVP: every image once per repetition block in a fresh random order; SOA + U(0, jitter)."""
    order = np.concatenate([rng.permutation(images) for _ in range(repetitions)])
    reps = np.repeat(np.arange(repetitions), len(images))
    gaps = cfg.soa + rng.uniform(0.0, cfg.soa_jitter, len(order)) if cfg.soa_jitter > 0 else np.full(len(order), cfg.soa)
    onset_s = lead_in_s + np.concatenate([[0.0], np.cumsum(gaps[:-1])])
    onsets = np.round(onset_s * cfg.sfreq).astype(np.int64)
    n_samples = int(onsets[-1] + round((cfg.soa + cfg.soa_jitter + tail_s) * cfg.sfreq))
    return Timeline(order, reps, onsets, n_samples)
