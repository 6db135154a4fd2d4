"""SMR + ICG training (two stages, learned separately as the paper does) and SMR's evaluation.

1. Feature CNN: the builtin auto-encoder trained on training + extra images, or a frozen hub
   network from a local weights file (``torchvision:<arch>:<file>`` / ``timm:<arch>:<file>``).
2. SMR (Voxel2Unit): responses -> standardized multilayer features; lam1 by 5-fold CV, which also
   gives each unit's out-of-fold decodability (PCC) used to pick ICG's top-k condition units.
3. ICG (Unit2Pixel): trained on TRUE features of training + extra (unpaired) images - the paper's
   augmentation - and at test time conditioned on SMR's predicted features.
"""

from __future__ import annotations

import copy
import logging
import time

import numpy as np
import torch
from torch.nn import functional as F

from neuralign.errors import UserError
from neuralign.generative_config import GenerativeConfig, IcgConfig, SmrConfig
from neuralign.models.icg import ICG, FeatureCNN, SmrIcgDecoder, icg_losses, images_to_numpy
from neuralign.offline.generative.paired import PairedData
from neuralign.offline.generative.schedules import lr_schedule
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


def train_icg(net: ICG, images: np.ndarray, h: np.ndarray, cfg: IcgConfig, alpha: float,
              beta: float, device: torch.device, seed: int,
              val: tuple[np.ndarray, np.ndarray] | None = None) -> list[dict]:
    """Eq. 8-9 alternately: the encoder steps on ``enc``, the generator on ``gen`` (Adam).

    ``h``: the conditions of ``images``. ``val``: held-out (images, conditions); each epoch decodes
    them (``decode_samples``) and the best-SSIM epoch's weights are kept (its number is in the last
    history entry)."""
    from neuralign.offline.generative.metrics import decoding_metrics

    torch.manual_seed(seed)
    net.to(device)
    y, hh = _tensor_images(images).to(device), torch.as_tensor(h, dtype=torch.float32, device=device)
    enc_params, dec_params = net.encoder_parameters(), net.generator_parameters()
    opt_e = torch.optim.Adam(enc_params, lr=cfg.lr, betas=(0.9, 0.999))
    opt_g = torch.optim.Adam(dec_params, lr=cfg.lr, betas=(0.9, 0.999))
    gen = torch.Generator().manual_seed(seed)
    n_steps = cfg.epochs * sum(1 for i in range(0, len(y), cfg.batch_size) if len(y) - i >= 2)
    scheds = [s for s in (lr_schedule(o, cfg.lr_schedule, n_steps) for o in (opt_e, opt_g)) if s is not None]
    hist: list[dict] = []
    best: tuple[float, int, dict] | None = None
    for epoch in range(cfg.epochs):
        net.train()
        sums: dict[str, float] = {}
        n = 0
        # IntroVAE's num_vae: plain CVAE epochs first (only where the introspective term is on).
        a, b = (0.0, 1.0) if alpha > 0 and epoch < cfg.warmup_epochs else (alpha, beta)
        for idx in torch.randperm(len(y), generator=gen).split(cfg.batch_size):
            if len(idx) < 2:
                continue
            terms = icg_losses(net, y[idx], hh[idx], a, b, cfg.margin, cfg.likelihood == "calibrated")
            g_enc = torch.autograd.grad(terms["enc"], enc_params, retain_graph=True, allow_unused=True)
            g_gen = torch.autograd.grad(terms["gen"], dec_params, allow_unused=True)
            for p, g in zip(enc_params + dec_params, g_enc + g_gen):
                p.grad = g
            opt_e.step()
            opt_g.step()
            for sched in scheds:
                sched.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n += 1
        hist.append({k: v / max(n, 1) for k, v in sums.items()})
        if val is not None:
            net.eval()
            with torch.no_grad():
                hv = torch.as_tensor(val[1], dtype=torch.float32, device=device)
                out = net.decode_expected(hv, cfg.decode_samples, torch.Generator().manual_seed(seed))
            hist[-1]["val_ssim"] = decoding_metrics(images_to_numpy(out), val[0])["ssim"]
            if best is None or hist[-1]["val_ssim"] > best[0]:
                best = (hist[-1]["val_ssim"], epoch, copy.deepcopy(net.state_dict()))
        log.info("ICG(alpha=%g, beta=%g) epoch %d%s: %s", alpha, beta, epoch,
                 " (CVAE warm-up)" if (a, b) != (alpha, beta) else "",
                 {k: round(v, 3) for k, v in hist[-1].items()})
    if best is not None:
        net.load_state_dict(best[2])
        hist[-1]["kept_epoch"] = best[1]
        log.info("ICG(alpha=%g, beta=%g): kept epoch %d (validation SSIM %.4f)", alpha, beta, best[1], best[0])
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
    # numpy / scipy / scikit-learn get the same thread budget as torch (training.num_threads):
    # on the shared 2-core machine a 2-thread BLAS made one SMR W solve 6 s instead of 0.07 s.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=torch.get_num_threads()):
        return _train_smr_icg(paired, gen, device, seed)


def _train_smr_icg(paired: PairedData, gen: GenerativeConfig, device: torch.device,
                   seed: int) -> tuple[SmrIcgDecoder, dict]:
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
    # The paper selects ICG's condition units by decodability after SMR; its top-k (5000 of
    # 438856 AlexNet units) is also the only part of SMR's output the generator reads. Here the
    # structured SMR (Omega and Sigma_c are k x k) is fitted on the top-k units, ranked first by
    # an unstructured ridge's 5-fold out-of-fold PCC (cheap for any K); the other units keep that
    # ridge fit so predict_features still returns all K (the generator never reads them).
    top_k = min(icg_cfg.top_k, H.shape[1])
    ridge_w, ridge_b, decodability, oof = _ridge_decodability(X, H, seed)
    top_idx = np.sort(np.argsort(-decodability)[:top_k])
    smr = fit_smr(X, H[:, top_idx], gen.smr, seed=seed)
    W_full, b_full = ridge_w.copy(), ridge_b.copy()
    W_full[:, top_idx], b_full[top_idx] = smr.W, smr.b
    t_smr = time.perf_counter() - t1
    log.info("SMR on the top %d of %d units: lam1 %g, %d sweeps, %.0f s (feature CNN %.0f s)",
             top_k, H.shape[1], smr.lam1, len(smr.objective), t_smr, t_cnn)
    model = SmrIcgDecoder(paired.n_units, H.shape[1], top_k, paired.train_images.shape[1],
                          paired.n_channels, icg_cfg.latent_dim, tuple(icg_cfg.channels), cnn,
                          icg_cfg.train_baselines, icg_cfg.sample_z, layer_sizes, icg_cfg.decode_samples,
                          icg_cfg.linear_skip)
    for name, value in (("x_mean", x_mean), ("x_std", x_std), ("W", W_full), ("b", b_full),
                        ("h_mean", h_mean), ("h_std", h_std)):
        getattr(model, name).copy_(torch.as_tensor(np.asarray(value, np.float32)))
    model.top_idx = torch.as_tensor(top_idx, dtype=torch.long)
    model.smr_lam1.fill_(smr.lam1)
    # ICG on the true features of every image with features (training + unpaired extra images),
    # but a share of the paired rows (val_fraction): those pick the epoch, decoded from their
    # out-of-fold predicted features, i.e. as the test images will be.
    n_paired = len(paired.train_images)
    hk_extra = ((_features(cnn, gen, pool_images[n_paired:], device) - h_mean) / h_std)[:, top_idx] \
        if len(pool_images) > n_paired else np.zeros((0, top_k))
    val_rows = np.sort(np.random.default_rng(seed + 1).permutation(n_paired)[
        :int(round(icg_cfg.val_fraction * n_paired))])
    fit_rows = np.setdiff1d(np.arange(n_paired), val_rows)
    conditions = np.concatenate([H[fit_rows][:, top_idx], hk_extra]).astype(np.float32)
    icg_images = np.concatenate([paired.train_images[fit_rows], pool_images[n_paired:]])
    val = (paired.train_images[val_rows], oof[val_rows][:, top_idx]) if len(val_rows) else None
    t2 = time.perf_counter()
    history = {"icg": train_icg(model.icg, icg_images, conditions, icg_cfg, icg_cfg.alpha, icg_cfg.beta,
                                device, seed, val)}
    if icg_cfg.train_baselines:
        # The baselines are the special cases as such: the CGAN gets no CVAE warm-up (that is
        # part of ICG's schedule); the same epochs, conditions and validation as ICG.
        base_cfg = icg_cfg.model_copy(update={"warmup_epochs": 0})
        for name, (a, b) in BASELINE_WEIGHTS.items():
            history[name] = train_icg(model.baselines[name], icg_images, conditions, base_cfg, a, b,
                                      device, seed, val)
    history.update({"smr_lam1": smr.lam1, "smr_cv_nmse": smr.cv_scores, "smr_objective": smr.objective,
                    "top_k_min_decodability": float(decodability[top_idx].min()),
                    "top_k": top_k, "n_features": int(H.shape[1]), "layer_sizes": layer_sizes,
                    "n_icg_images": len(icg_images), "n_icg_val": len(val_rows), "seconds_cnn": t_cnn, "seconds_smr": t_smr,
                    "seconds_icg": time.perf_counter() - t2})
    return model.cpu().eval(), history


def _ridge_decodability(X: np.ndarray, H: np.ndarray,
                        seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unstructured ridge X -> H (alpha by RidgeCV's efficient LOO): its weights and intercept,
    each unit's 5-fold out-of-fold PCC at that alpha (its decodability), and the out-of-fold
    predictions themselves (what ICG's validation rows are decoded from)."""
    from sklearn.linear_model import Ridge, RidgeCV

    from neuralign.offline.generative.metrics import RIDGE_ALPHAS, pearson_columns

    alpha = float(RidgeCV(alphas=RIDGE_ALPHAS).fit(X, H).alpha_)
    oof = np.zeros_like(H)
    for f in np.array_split(np.random.default_rng(seed).permutation(len(X)), 5):
        tr = np.setdiff1d(np.arange(len(X)), f)
        oof[f] = Ridge(alpha=alpha).fit(X[tr], H[tr]).predict(X[f])
    full = Ridge(alpha=alpha).fit(X, H)
    return full.coef_.T.astype(np.float64), full.intercept_.astype(np.float64), \
        np.nan_to_num(pearson_columns(oof, H), nan=-1.0), oof


def _layer_pcc(pred: np.ndarray, true: np.ndarray, sizes: list[int]) -> dict[str, float]:
    from neuralign.offline.generative.metrics import pearson_columns

    r = pearson_columns(pred, true)
    out, start = {}, 0
    for i, size in enumerate(sizes):
        out[f"layer{i + 1}"] = float(np.nanmean(r[start:start + size]))
        start += size
    return out


ABLATIONS = {  # Table 2: which precisions are learned (output O = Omega, input I, task T)
    "smr_t": (False, False, True), "smr_i": (False, True, False), "smr_o": (True, False, False),
    "smr_ot": (True, False, True), "smr_it": (False, True, True), "smr_io": (True, True, False),
    "smr": (True, True, True),
}


def smr_ablation_table(X_train: np.ndarray, H_train: np.ndarray, X_test: np.ndarray,
                       H_test: np.ndarray, smr_cfg: SmrConfig, seed: int = 0) -> dict:
    """Table 2 on held-out stimuli: each configuration non-sparse (lam2 = lam3 = 1e-6 i.e. plain
    inverses, lam1 by its own 5-fold CV) and sparse (that lam1, graphical lasso), NMSE each."""
    from neuralign.offline.generative.metrics import nmse
    from neuralign.offline.generative.smr import fit_smr, fit_smr_fixed

    table = {}
    for name, (o, i, t) in ABLATIONS.items():
        t0 = time.perf_counter()
        cfg = smr_cfg.model_copy(update={"learn_output": o, "learn_input": i, "learn_task": t,
                                         "lam1": None})
        dense = fit_smr(X_train, H_train, cfg.model_copy(update={"sparse": False}), seed=seed)
        sparse = fit_smr_fixed(X_train, H_train, cfg.model_copy(update={"sparse": True}),
                               dense.lam1, cfg.n_iter)
        table[name] = {"non_sparse": nmse(dense.predict(X_test), H_test),
                       "sparse": nmse(sparse.predict(X_test), H_test), "lam1": dense.lam1,
                       "sweeps": len(sparse.objective), "seconds": time.perf_counter() - t0}
        log.info("SMR ablation %s: %s", name, {k: round(v, 4) for k, v in table[name].items()})
    return table


def evaluate_smr_icg(model: SmrIcgDecoder, paired: PairedData) -> dict:
    """SMR NMSE / per-layer PCC, the Table 2 ablations (each with its own CV lam1) vs unstructured
    ridge (scikit-learn RidgeCV on the same standardized rows), and the CVAE / CGAN baselines'
    decoded images."""
    from threadpoolctl import threadpool_limits

    # One BLAS thread: the evaluation does not see training.num_threads, and these 90 x 448
    # problems gain nothing from a second thread but stall on a busy one (5x slower measured).
    with threadpool_limits(limits=1):
        return _evaluate_smr_icg(model, paired)


def _evaluate_smr_icg(model: SmrIcgDecoder, paired: PairedData) -> dict:
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
    # SMR models the top-k units (the generator's condition); Table 2 and the ridge baseline are
    # measured on the same units.
    top = model.top_idx.numpy()
    layer_of = np.repeat(np.arange(len(model.layer_sizes)), model.layer_sizes)[top]
    top_sizes = [int(n) for n in np.bincount(layer_of, minlength=len(model.layer_sizes))]
    Hk_train, Hk_test, pred_k = H_train[:, top], H_test[:, top], pred[:, top]
    ablations = smr_ablation_table(X_train, Hk_train, X_test, Hk_test, smr_cfg)
    ridge = RidgeCV(alphas=RIDGE_ALPHAS).fit(X_train, Hk_train)
    ridge_pred = ridge.predict(X_test)
    report = {"smr": {"nmse": nmse(pred_k, Hk_test), "lam1": float(model.smr_lam1),
                      "per_layer_pcc": _layer_pcc(pred_k, Hk_test, top_sizes),
                      "units_per_layer": top_sizes, "n_units": int(len(top)),
                      "n_features": int(H_test.shape[1])},
              "smr_ablations": ablations,
              "feature_baselines": {"smr_o": {"nmse": ablations["smr_o"]["sparse"],
                                              "nmse_non_sparse": ablations["smr_o"]["non_sparse"],
                                              "lam1": ablations["smr_o"]["lam1"]},
                                    "ridge": {"nmse": nmse(ridge_pred, Hk_test), "alpha": float(ridge.alpha_),
                                              "per_layer_pcc": _layer_pcc(ridge_pred, Hk_test, top_sizes)}}}
    # Upper bound of Table 3's "true features" row: ICG on the true test features.
    upper = model.images_from_features(H_test)
    images = {"icg_true_features": upper}
    for name in model.baselines:
        images[name] = model.images_from_features(pred, which=name)
    return {"report": report, "baseline_images": images}
