"""SMR + ICG training (two stages, learned separately as the paper does) and SMR's evaluation.

1. Feature CNN: the builtin auto-encoder trained on training + extra images, or a frozen hub
   network from a local weights file (``torchvision:<arch>:<file>`` / ``timm:<arch>:<file>``).
2. SMR (Voxel2Unit): responses -> standardized multilayer features; lam1 by 5-fold CV, which also
   gives each unit's out-of-fold decodability (PCC) used to pick ICG's top-k condition units.
3. ICG (Unit2Pixel): trained on TRUE features of training + extra (unpaired) images - the paper's
   augmentation - and at test time conditioned on SMR's predicted features.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch.nn import functional as F

from neuralign.errors import UserError
from neuralign.generative_config import GenerativeConfig, IcgConfig, SmrConfig
from neuralign.models.icg import ICG, FeatureCNN, SmrIcgDecoder, icg_losses
from neuralign.offline.generative.paired import PairedData
from neuralign.offline.generative.smr import fit_smr

log = logging.getLogger(__name__)

BASELINE_WEIGHTS = {"cvae": (0.0, 1.0), "cgan": (1.0, 0.0)}  # (alpha, beta), paper's settings


def _tensor_images(images: np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(images, dtype=torch.float32)
    return x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)


def train_feature_cnn(images: np.ndarray, channels: list[int], pool: int, epochs: int, lr: float,
                      batch_size: int, device: torch.device, seed: int) -> FeatureCNN:
    """The builtin CNN as an image auto-encoder (MSE); its encoder layers are the features."""
    torch.manual_seed(seed)
    x = _tensor_images(images).to(device)
    cnn = FeatureCNN(x.shape[1], tuple(channels), pool).to(device)
    opt = torch.optim.Adam(cnn.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        cnn.train()
        total = 0.0
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            loss = F.mse_loss(cnn(x[idx]), x[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        log.info("feature CNN epoch %d: MSE %.5f", epoch, total / len(x))
    return cnn.eval()


@torch.no_grad()
def cnn_features(cnn: FeatureCNN, images: np.ndarray, device: torch.device) -> np.ndarray:
    cnn.eval()
    x = _tensor_images(images)
    return torch.cat([cnn.features(x[i:i + 256].to(device)).cpu() for i in range(0, len(x), 256)]).numpy()


def hub_features(spec: str, layers: list[str], images: np.ndarray, pool: int,
                 device: torch.device) -> tuple[np.ndarray, list[int]]:
    """Features of a frozen torchvision / timm network whose weights are a local file; each named
    layer (module path) is average-pooled to pool x pool. Nothing is downloaded."""
    kind, _, rest = spec.partition(":")
    arch, _, weights = rest.partition(":")
    if kind not in ("torchvision", "timm") or not arch or not weights or not layers:
        raise UserError(f"generative.feature_cnn.encoder {spec!r}: expected 'builtin', "
                        "'torchvision:<arch>:<weights file>' or 'timm:<arch>:<weights file>' "
                        "and feature_cnn.layers naming modules")
    try:
        if kind == "torchvision":
            import torchvision

            net = torchvision.models.get_model(arch, weights=None)
        else:
            import timm

            net = timm.create_model(arch, pretrained=False)
    except ImportError as exc:
        raise UserError(f"{spec}: needs the {kind} package ({exc})") from exc
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.eval().to(device)
    captured: dict[str, torch.Tensor] = {}
    modules = dict(net.named_modules())
    for name in layers:
        if name not in modules:
            raise UserError(f"{spec}: no module named {name!r}")
        modules[name].register_forward_hook(lambda m, i, o, n=name: captured.__setitem__(n, o))
    x = _tensor_images(images)
    x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # ImageNet statistics
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out, sizes = [], []
    with torch.no_grad():
        for i in range(0, len(x), 64):
            net(((F.interpolate(x[i:i + 64], size=224, mode="bilinear") - mean) / std).to(device))
            feats = [F.adaptive_avg_pool2d(captured[n], pool).flatten(1) for n in layers]
            sizes = [f.shape[1] for f in feats]
            out.append(torch.cat(feats, 1).cpu())
    return torch.cat(out).numpy(), sizes


def train_icg(net: ICG, images: np.ndarray, h: np.ndarray, cfg: IcgConfig, alpha: float, beta: float,
              device: torch.device, seed: int) -> list[dict]:
    """Eq. 8-9 alternately: the encoder steps on ``enc``, the generator on ``gen`` (Adam)."""
    torch.manual_seed(seed)
    net.to(device)
    y, hh = _tensor_images(images).to(device), torch.as_tensor(h, dtype=torch.float32, device=device)
    enc_params = list(net.enc_conv.parameters()) + list(net.enc_fc.parameters())
    dec_params = list(net.dec_fc.parameters()) + list(net.dec_conv.parameters())
    opt_e = torch.optim.Adam(enc_params, lr=cfg.lr, betas=(0.9, 0.999))
    opt_g = torch.optim.Adam(dec_params, lr=cfg.lr, betas=(0.9, 0.999))
    gen = torch.Generator().manual_seed(seed)
    hist = []
    for epoch in range(cfg.epochs):
        net.train()
        sums: dict[str, float] = {}
        n = 0
        for idx in torch.randperm(len(y), generator=gen).split(cfg.batch_size):
            if len(idx) < 2:
                continue
            terms = icg_losses(net, y[idx], hh[idx], alpha, beta, cfg.margin)
            g_enc = torch.autograd.grad(terms["enc"], enc_params, retain_graph=True, allow_unused=True)
            g_gen = torch.autograd.grad(terms["gen"], dec_params, allow_unused=True)
            for p, g in zip(enc_params + dec_params, g_enc + g_gen):
                p.grad = g
            opt_e.step()
            opt_g.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n += 1
        hist.append({k: v / max(n, 1) for k, v in sums.items()})
        log.info("ICG(alpha=%g, beta=%g) epoch %d: %s", alpha, beta, epoch,
                 {k: round(v, 3) for k, v in hist[-1].items()})
    return hist


def _standardize(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return a.mean(0), np.maximum(a.std(0), 1e-6)


def _features(model_cnn, gen: GenerativeConfig, images: np.ndarray, device) -> np.ndarray:
    if model_cnn is not None:
        return cnn_features(model_cnn, images, device)
    fc = gen.feature_cnn
    return hub_features(fc.encoder, fc.layers, images, fc.pool, device)[0]


def train_smr_icg(paired: PairedData, gen: GenerativeConfig, device: torch.device,
                  seed: int = 0) -> tuple[SmrIcgDecoder, dict]:
    """All three stages; returns the decoder module and a JSON-able history."""
    t0 = time.perf_counter()
    fc, icg_cfg = gen.feature_cnn, gen.icg
    pool_images = paired.train_images
    if icg_cfg.use_extra_images and paired.extra_images is not None:
        pool_images = np.concatenate([paired.train_images, paired.extra_images])
    if fc.encoder == "builtin":
        cnn = train_feature_cnn(pool_images, fc.channels, fc.pool, fc.epochs, fc.lr, fc.batch_size,
                                device, seed)
        layer_sizes = cnn.layer_sizes
    else:
        cnn = None
        layer_sizes = hub_features(fc.encoder, fc.layers, paired.train_images[:2], fc.pool, device)[1]
    t_cnn = time.perf_counter() - t0
    h_train = _features(cnn, gen, paired.train_images, device)
    h_mean, h_std = _standardize(h_train)
    x_mean, x_std = _standardize(paired.train_responses)
    X = (paired.train_responses - x_mean) / x_std
    H = (h_train - h_mean) / h_std
    t1 = time.perf_counter()
    smr = fit_smr(X, H, gen.smr, seed=seed)
    t_smr = time.perf_counter() - t1
    from neuralign.offline.generative.metrics import pearson_columns

    decodability = np.nan_to_num(pearson_columns(smr.oof_pred, H), nan=-1.0)
    top_k = min(icg_cfg.top_k, H.shape[1])
    top_idx = np.sort(np.argsort(-decodability)[:top_k])
    model = SmrIcgDecoder(paired.n_units, H.shape[1], top_k, paired.train_images.shape[1],
                          paired.n_channels, icg_cfg.latent_dim, tuple(icg_cfg.channels), cnn,
                          icg_cfg.train_baselines, icg_cfg.sample_z, layer_sizes)
    for name, value in (("x_mean", x_mean), ("x_std", x_std), ("W", smr.W), ("b", smr.b),
                        ("h_mean", h_mean), ("h_std", h_std)):
        getattr(model, name).copy_(torch.as_tensor(np.asarray(value, np.float32)))
    model.top_idx = torch.as_tensor(top_idx, dtype=torch.long)
    model.smr_lam1.fill_(smr.lam1)
    # ICG on true features of every image with features (training + unpaired extra images).
    h_pool = (_features(cnn, gen, pool_images, device) - h_mean) / h_std
    hk = h_pool[:, top_idx]
    t2 = time.perf_counter()
    history = {"icg": train_icg(model.icg, pool_images, hk, icg_cfg, icg_cfg.alpha, icg_cfg.beta,
                                device, seed)}
    if icg_cfg.train_baselines:
        for name, (a, b) in BASELINE_WEIGHTS.items():
            history[name] = train_icg(model.baselines[name], pool_images, hk, icg_cfg, a, b, device, seed)
    history.update({"smr_lam1": smr.lam1, "smr_cv_nmse": smr.cv_scores, "smr_objective": smr.objective,
                    "top_k": top_k, "n_features": int(H.shape[1]), "layer_sizes": layer_sizes,
                    "n_icg_images": len(pool_images), "seconds_cnn": t_cnn, "seconds_smr": t_smr,
                    "seconds_icg": time.perf_counter() - t2})
    return model.cpu().eval(), history


def _layer_pcc(pred: np.ndarray, true: np.ndarray, sizes: list[int]) -> dict[str, float]:
    from neuralign.offline.generative.metrics import pearson_columns

    r = pearson_columns(pred, true)
    out, start = {}, 0
    for i, size in enumerate(sizes):
        out[f"layer{i + 1}"] = float(np.nanmean(r[start:start + size]))
        start += size
    return out


def evaluate_smr_icg(model: SmrIcgDecoder, paired: PairedData) -> dict:
    """SMR NMSE / per-layer PCC vs SMR-O and unstructured ridge (refitted on the training rows
    with the run's lam1), and the CVAE / CGAN baselines' decoded images."""
    from sklearn.linear_model import RidgeCV

    from neuralign.offline.generative.metrics import RIDGE_ALPHAS, nmse

    device = model.W.device
    cfg_gen = getattr(model, "_gen_config", None)
    h_mean, h_std = model.h_mean.cpu().numpy(), model.h_std.cpu().numpy()
    if model.cnn is None:
        if cfg_gen is None:
            raise UserError("SMR evaluation with a hub CNN needs the run config (load_generative)")
        feats = lambda imgs: _features(None, cfg_gen, imgs, device)  # noqa: E731
    else:
        feats = lambda imgs: cnn_features(model.cnn, imgs, device)  # noqa: E731
    H_test = (feats(paired.test_images) - h_mean) / h_std
    H_train = (feats(paired.train_images) - h_mean) / h_std
    pred = model.predict_features(paired.test_responses)
    x_mean, x_std = model.x_mean.cpu().numpy(), model.x_std.cpu().numpy()
    X_train = (paired.train_responses - x_mean) / x_std
    X_test = (paired.test_responses - x_mean) / x_std
    smr_cfg = getattr(model, "_smr_config", None) or SmrConfig()
    lam1 = float(model.smr_lam1)
    smr_o_cfg = smr_cfg.model_copy(update={"learn_input": False, "learn_task": False, "lam1": lam1})
    smr_o = fit_smr(X_train, H_train, smr_o_cfg)
    ridge = RidgeCV(alphas=RIDGE_ALPHAS).fit(X_train, H_train)
    report = {"smr": {"nmse": nmse(pred, H_test), "per_layer_pcc": _layer_pcc(pred, H_test, model.layer_sizes),
                      "pcc_top_k_units": float(np.nanmean(_layer_pcc(pred[:, model.top_idx.numpy()],
                                                                      H_test[:, model.top_idx.numpy()],
                                                                      [len(model.top_idx)])["layer1"])),
                      "n_units": int(H_test.shape[1])},
              "feature_baselines": {"smr_o": {"nmse": nmse(smr_o.predict(X_test), H_test)},
                                    "ridge": {"nmse": nmse(ridge.predict(X_test), H_test),
                                              "alpha": float(ridge.alpha_)}}}
    # Upper bound of Table 3's "true features" row: ICG on the true test features.
    upper = model.images_from_features(H_test)
    images = {"icg_true_features": upper}
    for name in model.baselines:
        images[name] = model.images_from_features(pred, which=name)
    return {"report": report, "baseline_images": images}
