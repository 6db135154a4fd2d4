"""Several subjects: prepare, pretrain with one input layer each, evaluate, fine-tune one new
subject from the pretrained run (``train --init``), and what its bundle records."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.conftest import FAST_TRAIN


def test_prepare_stacks_subjects_with_their_own_normalisers(tiny_pretrained):
    from neuralign.offline.prepare import Prepared, prepare

    run, data, cfg = tiny_pretrained
    prep = Prepared.load(run / "prepared.npz")
    assert prep.subjects == ["1", "2"] and prep.n_subjects == 2
    n = len(prep.train_ids) // 2
    assert prep.train_ids[:n] == prep.train_ids[n:]  # one paradigm, both subjects
    np.testing.assert_array_equal(prep.row_subject, np.repeat([0, 1], n))
    assert len(prep.test_subject) == len(prep.x_test)
    # the same validation images in both subjects (no image trains in one and validates in other)
    val = np.asarray(prep.val_index)
    assert [prep.train_ids[i] for i in val[val < n]] == [prep.train_ids[i] for i in val[val >= n]]
    norms = prep.meta["subject_normalizers"]
    assert len(norms) == 2 and not np.allclose(norms[0]["w"], norms[1]["w"])
    one = prep.subject_view(1)
    assert len(one.x_train) == n and one.normalizer == norms[1]
    np.testing.assert_array_equal(one.x_train, prep.x_train[n:])
    # one subject asked for in the list form is the one-subject path
    single = prepare(cfg.model_copy(update={"dataset": cfg.dataset.model_copy(
        update={"subjects": [2]})}), data)
    np.testing.assert_allclose(single.x_train, prep.x_train[n:], atol=1e-6)


def test_pretrained_run_has_a_layer_per_subject_and_batches_of_one_subject(tiny_pretrained):
    import yaml

    from neuralign.errors import DataError
    from neuralign.offline.run_dir import load_run
    from neuralign.offline.runs import evaluate_run, export_run

    run, _, _ = tiny_pretrained
    config, prep, model = load_run(run)
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["subject_layers"] == 2
    layers = model.brain_encoder.layers.detach()
    assert not torch.allclose(layers[0], layers[1])  # each subject's own layer was trained
    report = evaluate_run(run, baselines=False, masks=False)
    assert set(report["per_subject"]) == {"1", "2"}
    assert 0.0 <= report["mean_over_subjects"]["retrieval"]["top1"] <= 1.0
    with pytest.raises(DataError, match="adapt it to the subject who will wear the cap"):
        export_run(run, run.parent / "nope")


def test_batches_never_mix_subjects():
    from neuralign.offline.train import DistInfo, _batches, _Data

    s_fit = np.repeat([0, 1, 2], [37, 20, 5])
    data = _Data(np.zeros((62, 1)), np.zeros((62, 1)), np.zeros((62, 1)), np.zeros(0),
                 np.zeros(0), np.random.default_rng(0), s_fit=s_fit)

    class _R:
        batch, dist, starts = 16, DistInfo(), []

    batches = _batches(_R(), data)
    assert all(len(set(s_fit[b])) == 1 for b in batches)
    assert sorted(np.concatenate(batches).tolist()) == list(range(62))  # every row, once
    assert [len(set(s_fit[b])) for b in batches] and {int(s_fit[b[0]]) for b in batches} == {0, 1, 2}


def _new_subject_prep(tiny_sim, order=None, drop=None, extra=False):
    from neuralign.offline.prepare import load_dataset, prepare_dataset

    cfg, _, data = tiny_sim
    ds = load_dataset(cfg, data)
    names = list(ds.ch_names)
    idx = list(range(len(names)))
    if order is not None:
        idx = order(idx)
    if drop is not None:
        idx = [i for i in idx if names[i] != drop]
    tr, te = ds.train.data[:, :, idx], ds.test.data[:, :, idx]
    ch, types = [names[i] for i in idx], [ds.ch_types[i] for i in idx]
    if extra:
        tr = np.concatenate([tr, tr[:, :, :1] * 0.5], axis=2)
        te = np.concatenate([te, te[:, :, :1] * 0.5], axis=2)
        ch, types = ch + ["EXTRA"], types + [types[0]]
    ds = replace(ds, train=replace(ds.train, data=tr), test=replace(ds.test, data=te),
                 ch_names=ch, ch_types=types)
    return prepare_dataset(cfg, ds)


@pytest.mark.parametrize("variant", ["same", "reversed", "extra"])
def test_new_subject_starts_from_the_pretrained_weights(tiny_pretrained, tiny_sim, variant):
    from neuralign.models import build_model
    from neuralign.offline.finetune import (
        adapted_config,
        initialise_from_pretrained,
        load_pretrained,
    )

    run, _, _ = tiny_pretrained
    pre = load_pretrained(run)
    prep = _new_subject_prep(tiny_sim, order=(lambda i: i[::-1]) if variant == "reversed" else None,
                             extra=variant == "extra")
    cfg = adapted_config(tiny_sim[0], pre, prep.ch_names, prep.x_train.shape[3],
                         prep.f_train.shape[1])
    assert cfg.model.spatial_projection == len(pre.ch_names) and cfg.model.subject_layers is None
    model = build_model(cfg.model, n_chans=len(prep.ch_names), n_times=prep.x_train.shape[3],
                        feature_dim=prep.f_train.shape[1])
    initialise_from_pretrained(model, pre, prep.ch_names)
    mean = pre.state["brain_encoder.layers"].mean(0)
    layer = model.brain_encoder.projection.weight[..., 0].detach()
    for j, name in enumerate(prep.ch_names):  # column j: this subject's channel j, by name
        expect = (mean[:, pre.ch_names.index(name)] if name in pre.ch_names
                  else torch.zeros(len(pre.ch_names)))
        torch.testing.assert_close(layer[:, j], expect)
    for name, value in pre.state.items():
        if name.startswith("brain_encoder.backbone."):
            torch.testing.assert_close(model.state_dict()[name], value)
    bias = model.brain_decoder.output_bias.detach()
    src = pre.state["brain_decoder.output_bias"]
    for j, name in enumerate(prep.ch_names):
        torch.testing.assert_close(bias[j], src[pre.ch_names.index(name)] if name in pre.ch_names
                                   else torch.zeros_like(src[0]))


def test_new_subject_missing_a_pretrained_channel_is_one_clear_error(tiny_pretrained, tiny_sim):
    from neuralign.errors import UserError
    from neuralign.offline.finetune import adapted_config, load_pretrained

    pre = load_pretrained(tiny_pretrained[0])
    prep = _new_subject_prep(tiny_sim, drop="Oz")
    with pytest.raises(UserError, match=r"lacks 1 of the pretrained channels \(Oz\)"):
        adapted_config(tiny_sim[0], pre, prep.ch_names, prep.x_train.shape[3],
                       prep.f_train.shape[1])


def test_fine_tune_layer_only_keeps_the_shared_weights(tiny_pretrained, tiny_sim, tmp_path):
    from safetensors.torch import load_file

    from neuralign.config import load_config
    from neuralign.offline.finetune import load_pretrained
    from neuralign.offline.train import train_model

    run, _, _ = tiny_pretrained
    _, cfg_path, _ = tiny_sim
    prep = _new_subject_prep(tiny_sim)
    cfg = load_config(cfg_path, [*FAST_TRAIN, f"training.fine_tune.init={run}",
                                 "training.fine_tune.train=subject_layer",
                                 "training.fine_tune.epochs=1",
                                 "training.calibrate_encoding=false"])
    hist = train_model(cfg, prep, tmp_path / "ft", progress=False)
    assert hist["pretrained"]["subjects"] == ["1", "2"]
    assert hist["epochs"] == 1 and len(hist["history"]) == 1  # fine_tune.epochs over training's 2
    after = load_file(tmp_path / "ft" / "model.safetensors")
    pre = load_pretrained(run)
    moved = ~torch.isclose(after["brain_encoder.projection.weight"][..., 0],
                           pre.state["brain_encoder.layers"].mean(0))
    assert moved.any()  # the layer learned
    for name, value in pre.state.items():  # the shared encoder did not
        if (name.startswith("brain_encoder.backbone.") and value.dtype.is_floating_point
                and "running" not in name):
            torch.testing.assert_close(after[name], value)


def test_train_init_cli_and_bundle_records_the_pretraining(tiny_pretrained, tiny_sim, tmp_path):
    from neuralign.bundle import load_bundle
    from neuralign.cli import main

    run, _, _ = tiny_pretrained
    _, cfg_path, data = tiny_sim
    sets = [f"--set={s}" for s in FAST_TRAIN]
    assert main(["train", "--config", str(cfg_path), "--data", str(data), "--init", str(run),
                 *sets, "--out", str(tmp_path / "ft")]) == 0
    assert main(["export", "--run", str(tmp_path / "ft"), "--out", str(tmp_path / "b")]) == 0
    bundle = load_bundle(tmp_path / "b")
    assert bundle.manifest.pretrained is not None
    assert bundle.manifest.pretrained.subjects == ["1", "2"]
    assert bundle.manifest.pretrained.run == str(run.resolve())
    assert bundle.manifest.model.config.spatial_projection == len(bundle.manifest.channels.names)
    hist = json.loads((tmp_path / "ft" / "history.json").read_text())
    assert hist["pretrained"]["fresh"] == []  # every tensor came from the pretrained run


def test_subjects_flag_parses_lists_and_ranges():
    from neuralign.cli.offline import _subject_list
    from neuralign.errors import UserError

    assert _subject_list("1-3,7") == [1, 2, 3, 7]
    with pytest.raises(UserError, match="expected numbers like 1,2,5"):
        _subject_list("one")
