"""Optimiser options of ``neuralign train``: decay-free parameter groups, cosine schedule, EMA."""

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from neuralign.config import load_config
from neuralign.models import BrainAE, build_model
from neuralign.offline.train import (
    calibrate_encoding,
    evaluate_loss,
    model_inputs,
    parameter_groups,
    train_model,
)
from tests.conftest import FAST_TRAIN, TINY_SIM


def test_only_conv_and_linear_weights_are_decayed() -> None:
    model = BrainAE(8, 64, 12, k=4, m1=9, m2=3, s=3, learn_tau=True)
    decay, no_decay = parameter_groups(model, 1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert "brain_decoder.output_bias" in kept and "temperature.log_inv_tau" in kept
    assert "brain_encoder.temporal.weight" in decayed and "image_projection.weight" in decayed
    assert not any(n.endswith(".bias") for n in decayed)
    assert not any(".pool.1." in n or ".spatial.1." in n for n in decayed)  # BatchNorm
    assert decayed | kept == set(names.values())


@pytest.fixture(scope="module")
def tiny_prepared(tiny_sim):
    from neuralign.offline.prepare import prepare

    _, _, data = tiny_sim
    cfg = load_config("demo", [f"dataset.simulation.{k}={v}" for k, v in TINY_SIM.items()] + FAST_TRAIN)
    return cfg, prepare(cfg, data)


def test_cosine_schedule_and_ema_checkpoint_is_what_was_validated(tiny_prepared, tmp_path) -> None:
    base, prep = tiny_prepared
    cfg = base.model_copy(update={"training": base.training.model_copy(
        update={"epochs": 3, "lr_schedule": "cosine", "ema_decay": 0.5})})
    hist = train_model(cfg, prep, tmp_path, progress=False)
    lrs = [row["lr"] for row in hist["history"]]
    assert lrs[0] < cfg.training.lr and lrs == sorted(lrs, reverse=True) and lrs[-1] < 1e-9
    # The checkpoint holds the averaged weights, the ones the best validation loss was measured on.
    model = build_model(cfg.model, n_chans=prep.x_train.shape[2], n_times=prep.x_train.shape[3],
                        feature_dim=prep.f_train.shape[1])
    model.load_state_dict(load_file(tmp_path / "model.safetensors"))
    x_val, f_val, _ = model_inputs(prep, prep.val_index, True)
    val = evaluate_loss(model, x_val, f_val, cfg, torch.device("cpu"), cfg.training.batch_size)
    assert val["total"] == pytest.approx(hist["best_val_loss"], rel=1e-5)
    assert np.isfinite(val["total"])


def test_encoding_calibration_is_fitted_on_training_rows_only(tiny_prepared) -> None:
    cfg, prep = tiny_prepared
    torch.manual_seed(0)
    model = build_model(cfg.model, n_chans=prep.x_train.shape[2], n_times=prep.x_train.shape[3],
                        feature_dim=prep.f_train.shape[1]).eval()
    f_fit = torch.from_numpy(prep.f_train[prep.fit_index])
    raw_before = model.predict_response(f_fit).detach().numpy()
    torch.testing.assert_close(model.predict_response(f_fit), model.decode(model.encode_image(f_fit)))
    res = calibrate_encoding(model, prep, torch.device("cpu"), 8)
    with torch.no_grad():
        pred_fit = model.predict_response(f_fit).numpy()
        pred_val = model.predict_response(torch.from_numpy(prep.f_train[prep.val_index])).numpy()
    mean = prep.x_train[prep.fit_index].mean(axis=(0, 1))
    # the read-out's common part over the fitting images is exactly the mean training response
    np.testing.assert_allclose(pred_fit.mean(axis=0), mean, atol=1e-4)
    # ... and its deviations are the linear read-out of zi plus the raw ones scaled by the gain
    with torch.no_grad():
        zi = model.encode_image(f_fit)
        linear = torch.einsum("bd,dct->bct", zi - model.encoding_zi_center,
                              model.encoding_linear).numpy()
    np.testing.assert_allclose(model.encoding_zi_center.numpy(), zi.numpy().mean(0), atol=1e-5)
    np.testing.assert_allclose(pred_fit - mean - linear,
                               res["gain"] * (raw_before - raw_before.mean(0)), atol=1e-4)
    # the gain is the least-squares one, on the validation images, of what the linear part leaves
    true_val = prep.x_train[prep.val_index].mean(axis=1)
    with torch.no_grad():
        zv = model.encode_image(torch.from_numpy(prep.f_train[prep.val_index]))
        lin_val = torch.einsum("bd,dct->bct", zv - model.encoding_zi_center,
                               model.encoding_linear).numpy()
    dev = (pred_val - mean - lin_val) / max(res["gain"], 1e-9)

    def mse(g):
        return float(((mean + lin_val + g * dev - true_val) ** 2).mean())

    assert res["gain"] >= 0 and mse(res["gain"]) <= min(mse(res["gain"] + 0.05), mse(res["gain"] + 0.5))
    if res["gain"] > 0.05:
        assert mse(res["gain"]) <= mse(res["gain"] - 0.05)
    assert res["val_mse_calibrated"] <= res["val_mse_linear"] + 1e-6
    # the test split played no part: changing it changes nothing
    prep2 = dataclasses.replace(prep, x_test=np.full_like(prep.x_test, 3.0))
    model2 = build_model(cfg.model, n_chans=prep.x_train.shape[2], n_times=prep.x_train.shape[3],
                         feature_dim=prep.f_train.shape[1]).eval()
    model2.load_state_dict({k: v for k, v in model.state_dict().items()})
    assert calibrate_encoding(model2, prep2, torch.device("cpu"), 8) == res


def test_weights_without_encoding_read_out_load_uncalibrated() -> None:
    torch.manual_seed(0)
    model = BrainAE(8, 64, 12, k=4, m1=9, m2=3, s=3)
    model.encoding_gain.fill_(0.3)
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("encoding_")}
    fresh = BrainAE(8, 64, 12, k=4, m1=9, m2=3, s=3)
    fresh.load_state_dict(old)  # strict: the absent read-out comes back as the identity
    fresh.eval()
    f = torch.randn(3, 12)
    torch.testing.assert_close(fresh.predict_response(f), fresh.decode(fresh.encode_image(f)))


def test_min_steps_per_epoch_one_keeps_the_papers_batch() -> None:
    from neuralign.offline.train import effective_batch_size

    assert effective_batch_size(800, 640) == 32  # the default rule (issue 13)
    assert effective_batch_size(800, 640, min_steps=1) == 640  # the whole set: one step
    assert effective_batch_size(800, 2560, min_steps=1) == 800
    assert load_config("things_eeg2", ["training.min_steps_per_epoch=1"]).training.min_steps_per_epoch == 1


def test_gradient_cached_training_follows_the_one_graph_run(tiny_prepared, tmp_path) -> None:
    """Batch 24 in micro-batches of 5 (gradient caching) vs one graph: the same losses, epoch by
    epoch, and the summary says which path ran. Without dropout (the masks' RNG streams differ)."""
    base, prep = tiny_prepared
    runs = {}
    for micro in (5, 64):
        cfg = base.model_copy(update={"model": base.model.model_copy(update={"dropout": 0.0}),
                                      "training": base.training.model_copy(update={
            "epochs": 2, "batch_size": 24, "min_steps_per_epoch": 1, "micro_batch_size": micro,
            "calibrate_encoding": False, "num_threads": 1})})
        threads = torch.get_num_threads()  # one thread: an oversubscribed CI box is 10x slower
        try:
            runs[micro] = train_model(cfg, prep, tmp_path / str(micro), progress=False)
        finally:
            torch.set_num_threads(threads)
    assert runs[5]["micro_batch_size"] == 5 and runs[64]["micro_batch_size"] is None
    assert runs[5]["batch_size"] == runs[64]["batch_size"] == 24
    for a, b in zip(runs[5]["history"], runs[64]["history"]):
        assert a["train_total"] == pytest.approx(b["train_total"], rel=1e-4)
        assert a["val_total"] == pytest.approx(b["val_total"], rel=1e-3)


def test_training_without_folding_follows_the_folded_run(tiny_prepared, tmp_path,
                                                        monkeypatch) -> None:
    """``training.fold: false`` runs TSConv's linear pairs as written (the pre-issue-15
    computation, for before/after measurements): same parameters, so the same losses."""
    from neuralign.models import tsconv

    base, prep = tiny_prepared
    runs, folds = {}, {True: 0, False: 0}
    for fold in (True, False):
        real = tsconv.fold_pool_into_kernel

        def counting(*a, fold=fold, real=real, **k):
            folds[fold] += 1
            return real(*a, **k)

        monkeypatch.setattr(tsconv, "fold_pool_into_kernel", counting)
        cfg = base.model_copy(update={"model": base.model.model_copy(update={"dropout": 0.0}),
                                      "training": base.training.model_copy(update={
            "epochs": 2, "batch_size": 24, "min_steps_per_epoch": 1, "fold": fold,
            "calibrate_encoding": False, "num_threads": 1})})
        threads = torch.get_num_threads()
        try:
            runs[fold] = train_model(cfg, prep, tmp_path / str(fold), progress=False)
        finally:
            torch.set_num_threads(threads)
        monkeypatch.setattr(tsconv, "fold_pool_into_kernel", real)
    assert folds[True] > 0 and folds[False] == 0
    for a, b in zip(runs[True]["history"], runs[False]["history"]):
        assert a["train_total"] == pytest.approx(b["train_total"], rel=1e-4)
        assert a["val_total"] == pytest.approx(b["val_total"], rel=1e-3)
    assert load_config("things_eeg2", ["training.fold=false"]).training.fold is False
