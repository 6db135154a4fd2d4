"""Frozen image encoders: a built-in one that needs no weights, and open_clip with local weights.

The BrainAE recipe trains only a linear projection on top of a frozen image model. Real studies
use CLIP/EVA-CLIP embeddings (pass a features file, or ``open_clip:<arch>:<weights file>`` with the
``[clip]`` extra). The demo and the tests cannot download weights, so neuralign ships a frozen,
deterministic encoder built from classic vision features - colour statistics on a spatial grid,
Gabor energy (orientation x spatial frequency, the V1 model), and a coarse luminance layout -
which is what the simulator's images vary in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from neuralign.errors import DataError, UserError, require_file

log = logging.getLogger(__name__)

BUILTIN_SIZE = 64


def _gabor_bank(size: int = 15) -> list[np.ndarray]:
    """Even/odd Gabor pairs: 4 orientations x 3 spatial frequencies (cycles / pixel)."""
    half = size // 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    bank = []
    for freq, sigma in ((0.08, 4.0), (0.16, 2.5), (0.3, 1.5)):
        for theta in np.arange(4) * np.pi / 4:
            xr = xx * np.cos(theta) + yy * np.sin(theta)
            env = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
            for phase in (0.0, np.pi / 2):
                k = env * np.cos(2 * np.pi * freq * xr + phase)
                bank.append(k - k.mean())
    return bank


class BuiltinImageEncoder:
    """Deterministic hand-designed features (no weights, no training, no download).

    Output per image (before L2 normalisation): 4x4 grid of mean RGB (48) + 2x2 grid of RGB std
    (12) + Gabor energy of 12 channels pooled on a 2x2 grid and globally (60) + an 8x8 luminance
    thumbnail (64) = 184 dimensions, each block standardised to comparable scale.
    """

    name = "builtin"

    def __init__(self) -> None:
        bank = np.stack(_gabor_bank())  # (24, k, k): even/odd pairs
        self._k = bank.shape[-1]
        self._n_fft = BUILTIN_SIZE + self._k - 1
        self._bank_fft = np.fft.rfft2(bank, s=(self._n_fft, self._n_fft))

    @property
    def dim(self) -> int:
        return 48 + 12 + 60 + 64

    def encode_array(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb`` (H, W, 3) uint8 or float in [0, 1] -> (dim,) float32."""
        img = np.asarray(rgb, dtype=np.float64)
        if img.max() > 1.5:
            img = img / 255.0
        if img.shape[:2] != (BUILTIN_SIZE, BUILTIN_SIZE):
            pil = Image.fromarray((img * 255).clip(0, 255).astype(np.uint8))
            img = np.asarray(pil.resize((BUILTIN_SIZE, BUILTIN_SIZE), Image.BILINEAR)) / 255.0
        g = BUILTIN_SIZE
        color = img.reshape(4, g // 4, 4, g // 4, 3).mean(axis=(1, 3)).ravel()
        spread = img.reshape(2, g // 2, 2, g // 2, 3).std(axis=(1, 3)).ravel()
        lum = img @ np.array([0.299, 0.587, 0.114])
        lum = lum - lum.mean()
        # All 24 Gabor filters in one FFT convolution ('same' crop), then quadrature energy.
        resp = np.fft.irfft2(np.fft.rfft2(lum, s=(self._n_fft,) * 2)[None] * self._bank_fft,
                             s=(self._n_fft,) * 2)
        h = self._k // 2
        resp = resp[:, h : h + g, h : h + g]
        energy = np.sqrt(resp[0::2] ** 2 + resp[1::2] ** 2)  # (12, g, g)
        quad = energy.reshape(12, 2, g // 2, 2, g // 2).mean(axis=(2, 4)).reshape(12, 4)
        gabor = np.concatenate([quad, energy.mean(axis=(1, 2))[:, None]], axis=1).ravel()
        thumb = lum.reshape(8, g // 8, 8, g // 8).mean(axis=(1, 3)).ravel()
        blocks = [color - 0.5, spread * 2, gabor * 4, thumb * 2]
        return np.concatenate(blocks).astype(np.float32)

    def encode_files(self, paths: Sequence[Path]) -> np.ndarray:
        return np.stack([self.encode_array(_read_rgb(p)) for p in paths])


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: image file not found") from exc
    except OSError as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from exc


class OpenClipEncoder:
    """open_clip image tower with LOCAL weights (``open_clip:<arch>:<weights path>``).

    ``weights`` may be ``none`` for an untrained model (used to test this code path offline).
    """

    def __init__(self, arch: str, weights: str | None, device: str = "cpu"):
        try:
            import open_clip
        except ImportError as exc:
            raise UserError(
                "features.encoder: open_clip encoders need the [clip] extra: "
                "pip install 'neuralign[clip]'"
            ) from exc
        import torch

        pretrained = None if weights in (None, "", "none") else weights
        if pretrained is not None:
            require_file(pretrained, "open_clip weights file not found (nothing is downloaded)")
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
        self.model = model.eval().to(device)
        self.preprocess = preprocess
        self.device = device
        self.name = f"open_clip:{arch}"
        self._torch = torch

    def encode_files(self, paths: Sequence[Path], batch_size: int = 32) -> np.ndarray:
        torch = self._torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(paths), batch_size):
                ims = [self.preprocess(Image.fromarray(_read_rgb(p))) for p in paths[i : i + batch_size]]
                feats = self.model.encode_image(torch.stack(ims).to(self.device))
                out.append(feats.float().cpu().numpy())
        return np.concatenate(out)


def make_encoder(spec: str, device: str = "cpu") -> BuiltinImageEncoder | OpenClipEncoder:
    """``builtin`` or ``open_clip:<arch>:<weights file|none>``."""
    if spec == "builtin":
        return BuiltinImageEncoder()
    if spec.startswith("open_clip:"):
        parts = spec.split(":", 2)
        if len(parts) < 2 or not parts[1]:
            raise UserError(f"features.encoder: expected open_clip:<arch>:<weights file>, got {spec!r}")
        return OpenClipEncoder(parts[1], parts[2] if len(parts) == 3 else None, device)
    raise UserError(f"features.encoder: expected 'builtin' or 'open_clip:<arch>:<weights>', got {spec!r}")


def compute_features(
    image_files: dict[str, Path], image_ids: Sequence[str], spec: str = "builtin",
    device: str = "cpu",
) -> np.ndarray:
    """Features for ``image_ids`` in that order; a missing image file is a DataError."""
    missing = [i for i in image_ids if i not in image_files]
    if missing:
        raise DataError(
            f"{len(missing)} images have no file to compute features from (e.g. {missing[:3]}); "
            "pass --features with precomputed features"
        )
    encoder = make_encoder(spec, device)
    log.info("computing %s features for %d images", encoder.name, len(image_ids))
    return encoder.encode_files([image_files[i] for i in image_ids]).astype(np.float32)


def pixel_features(image_files: dict[str, Path], image_ids: Sequence[str],
                   size: int = BUILTIN_SIZE) -> np.ndarray:
    """Flattened RGB pixels in [0, 1] at ``size`` x ``size`` (channels first): VNA's input."""
    missing = [i for i in image_ids if i not in image_files]
    if missing:
        raise DataError(f"{len(missing)} images have no file (e.g. {missing[:3]}); VNA needs pixels")
    out = np.empty((len(image_ids), 3 * size * size), np.float32)
    for n, img in enumerate(image_ids):
        rgb = Image.fromarray(_read_rgb(image_files[img])).resize((size, size), Image.BILINEAR)
        out[n] = (np.asarray(rgb, np.float32) / 255.0).transpose(2, 0, 1).ravel()
    return out
