"""Render the simulated stimuli: a textured polygon on a uniform background, one PNG per image.

The render parameters come from the image latent (see ``paradigm``), so the pixels carry the same
information the simulated brain responds to: an image encoder can recover concepts from them.
"""

from __future__ import annotations

import colorsys
import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from neuralign.errors import require_file
from neuralign.offline.simulator.paradigm import RENDER_PARAMS, Paradigm

SPLIT_FOLDERS = {"train": "training_images", "test": "test_images", "template": "template_images"}


def render_image(params: np.ndarray, size: int) -> Image.Image:
    """One RGB image from render parameters in [0, 1] (order of ``RENDER_PARAMS``)."""
    p = dict(zip(RENDER_PARAMS, np.clip(params, 0.0, 1.0)))
    n_vert = 3 + int(round(p["n_vertices"] * 5))  # 3..8 vertices
    radius = size * (0.18 + 0.22 * p["size"])
    cx = size * (0.5 + 0.25 * (p["pos_x"] - 0.5))
    cy = size * (0.5 + 0.25 * (p["pos_y"] - 0.5))
    rot = 2 * np.pi * p["rotation"]
    angles = rot + 2 * np.pi * np.arange(n_vert) / n_vert
    polygon = [(float(cx + radius * np.cos(a)), float(cy + radius * np.sin(a))) for a in angles]

    # Grating texture in the shape's colour.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    theta = np.pi * p["grating_orientation"]
    cycles = 2.0 + 8.0 * p["grating_frequency"]
    grating = np.sin(2 * np.pi * cycles * (xx * np.cos(theta) + yy * np.sin(theta)))
    rgb = np.array(colorsys.hsv_to_rgb(p["hue"], 0.35 + 0.65 * p["saturation"], 0.85))
    contrast = 0.1 + 0.4 * p["grating_contrast"]
    texture = np.clip(rgb[None, None, :] * (1.0 + contrast * grating[..., None]), 0.0, 1.0)

    background = np.full((size, size, 3), 0.1 + 0.8 * p["background"])
    mask_img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask_img).polygon(polygon, fill=255)
    mask = (np.asarray(mask_img, dtype=np.float64) / 255.0)[..., None]
    pixels = mask * texture + (1.0 - mask) * background
    return Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="RGB")


def relative_image_path(split: str, concept: str, image_id: str) -> str:
    """Path of an image below ``image_set/`` (THINGS layout: ``<split folder>/<concept>/<file>``)."""
    return f"{SPLIT_FOLDERS[split]}/{concept}/{image_id}.png"


def write_image_set(paradigm: Paradigm, image_dir: Path, size: int) -> dict[str, Path]:
    """Write every PNG, ``image_metadata.npy`` (THINGS-EEG2 keys) and ``metadata.csv``."""
    files: dict[str, Path] = {}
    rows = []
    for k, (image_id, concept, split) in enumerate(
        zip(paradigm.image_ids, paradigm.concepts, paradigm.split)
    ):
        rel = relative_image_path(str(split), concept, image_id)
        path = image_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        render_image(paradigm.render[k], size).save(path, format="PNG")
        files[image_id] = path
        rows.append((image_id, concept, str(split), rel))

    train = paradigm.indices("train")
    test = paradigm.indices("test")
    metadata = {
        "train_img_concepts": np.array([paradigm.concepts[i] for i in train]),
        "train_img_files": np.array([f"{paradigm.image_ids[i]}.png" for i in train]),
        "test_img_concepts": np.array([paradigm.concepts[i] for i in test]),
        "test_img_files": np.array([f"{paradigm.image_ids[i]}.png" for i in test]),
    }
    np.save(image_dir / "image_metadata.npy", metadata, allow_pickle=True)
    with open(image_dir / "metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_id", "concept", "split", "file"])
        writer.writerows(rows)
    return files


def image_paths(dataset_dir: Path | str) -> dict[str, Path]:
    """Image id -> absolute PNG path, read from ``<dataset_dir>/image_set/metadata.csv``."""
    image_dir = Path(dataset_dir) / "image_set"
    table = require_file(image_dir / "metadata.csv",
                         "simulated image table not found (run 'neuralign simulate')")
    with open(table, newline="") as fh:
        return {row["image_id"]: (image_dir / row["file"]).resolve() for row in csv.DictReader(fh)}
