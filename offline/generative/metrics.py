"""The papers' metrics and baselines for generative runs.

Decoding (FLIG Eq. 22-24, SMR+ICG Table 3): per-image pixel MSE, pixel PCC and SSIM (scikit-image,
data range 1, Gaussian-free 7x7 window as in its default), averaged over test images.
Encoding (FLIG Eq. 19-21): MSE on responses scaled to [-1, 1] (the space the paper reports),
Poisson NLL (Eq. 20) on the response units, per-neuron PCC across test images.
Feature decoding (SMR+ICG Table 2 / Fig. 4): NMSE and per-unit PCC per layer.
Baselines: a ridge pixel decoder (standardized responses -> pixels, alpha by efficient
leave-one-out CV over ``baselines.RIDGE_ALPHAS_FINE``, a quarter-decade grid 1e-2..1e6; it
delegates to ``baselines.tuned_ridge``) and an LNP encoder (pixels -> rates, exponential
nonlinearity, Poisson likelihood; ``baselines.lnp_encoder_cv`` cross-validates its settings).
``RIDGE_ALPHAS`` (decades) remains the grid of the feature-decoding ridges in ``smr_icg_train``.
"""

from __future__ import annotations

import logging

import numpy as np

from neuralign.offline.generative.correlation import pearson_rows

log = logging.getLogger(__name__)

RIDGE_ALPHAS = tuple(10.0 ** np.arange(-2, 6))


def pearson_columns(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-column (neuron / unit) Pearson r across samples (Eq. 21); 0 for a constant column."""
    return pearson_rows(np.asarray(pred, np.float64).T, np.asarray(true, np.float64).T)


def decoding_metrics(decoded: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Mean per-image pixel MSE (Eq. 22), pixel PCC and SSIM (Eq. 24) of images in [0, 1]."""
    from skimage.metrics import structural_similarity

    decoded, true = np.asarray(decoded, np.float64), np.asarray(true, np.float64)
    if decoded.shape != true.shape:
        raise ValueError(f"decoded {decoded.shape} and true {true.shape} images differ in shape")
    n = len(true)
    flat_d, flat_t = decoded.reshape(n, -1), true.reshape(n, -1)
    rgb = true.ndim == 4
    ssim = [structural_similarity(t, d, data_range=1.0, channel_axis=-1 if rgb else None)
            for t, d in zip(true, decoded)]
    return {"mse": float(((flat_d - flat_t) ** 2).mean()),
            "pcc": float(pearson_rows(flat_d, flat_t).mean()),
            "ssim": float(np.mean(ssim)), "n_images": int(n)}


def encoding_metrics(pred: np.ndarray, true: np.ndarray, offset: np.ndarray, scale: np.ndarray,
                     counts: bool) -> dict[str, float]:
    """Eq. 19 MSE on [-1, 1]-scaled responses, Eq. 20 Poisson NLL (counts only), Eq. 21 PCC."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    out = {"mse": float((((pred - true) / scale) ** 2).mean()),
           "pcc": float(np.nanmean(pearson_columns(pred, true)))}
    if counts:
        p = np.maximum(pred, 1e-6)
        out["nll"] = float((p - true * np.log(p)).mean())
    return out


def nmse(pred: np.ndarray, true: np.ndarray) -> float:
    """Normalized MSE: sum of squared errors / sum of squares of the centred truth, per unit,
    averaged over units (Table 2; 1 = predicting the test mean)."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    den = ((true - true.mean(0)) ** 2).sum(0)
    keep = den > 0
    return float((((pred - true) ** 2).sum(0)[keep] / den[keep]).mean())


def ridge_pixel_decoder(train_resp: np.ndarray, train_images: np.ndarray,
                        test_resp: np.ndarray) -> np.ndarray:
    """Linear baseline: standardized responses -> pixels, ridge with efficient LOO-CV alpha over
    the quarter-decade grid (``baselines.tuned_ridge``); images clipped to [0, 1]."""
    from neuralign.offline.generative.baselines import tuned_ridge

    return tuned_ridge(train_resp, train_images, test_resp).images


def lnp_encoder(train_images: np.ndarray, train_resp: np.ndarray, test_images: np.ndarray,
                n_components: int = 100, alpha: float = 1e-2) -> np.ndarray:
    """LNP (FLIG's first baseline): linear filter on the (PCA-whitened) pixels, exponential
    nonlinearity, Poisson likelihood; one scikit-learn PoissonRegressor per neuron."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import PoissonRegressor

    n, n_test = len(train_images), len(test_images)
    pca = PCA(n_components=min(n_components, n - 1), whiten=True, random_state=0)
    a = pca.fit_transform(train_images.reshape(n, -1))
    b = pca.transform(test_images.reshape(n_test, -1))
    pred = np.empty((n_test, train_resp.shape[1]), np.float32)
    for j in range(train_resp.shape[1]):
        y = np.maximum(train_resp[:, j], 0.0)
        if y.max() <= 0:
            pred[:, j] = 0.0
            continue
        pred[:, j] = PoissonRegressor(alpha=alpha, max_iter=300).fit(a, y).predict(b)
    return pred


def image_grid(rows: list[np.ndarray], labels: list[str], path, n: int = 12) -> None:
    """PNG: one row per image set (true, decoded, baselines), the first ``n`` test images."""
    from PIL import Image, ImageDraw

    rows = [np.asarray(r[:n], np.float32) for r in rows]
    size = rows[0].shape[1]
    pad, label_w = 2, 90
    n = rows[0].shape[0]
    canvas = Image.new("RGB", (label_w + n * (size + pad), len(rows) * (size + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (imgs, label) in enumerate(zip(rows, labels)):
        y = r * (size + pad)
        draw.text((4, y + size // 2 - 5), label, fill="black")
        for i, img in enumerate(imgs):
            arr = np.clip(img, 0, 1)
            arr = np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr
            canvas.paste(Image.fromarray((arr * 255).round().astype(np.uint8)), (label_w + i * (size + pad), y))
    canvas.save(path)
