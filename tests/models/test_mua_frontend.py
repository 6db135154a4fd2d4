"""BrainAE's cheap front ends for many channels: the learned spatial projection
(``model.spatial_projection``) and fewer per-channel temporal filters (``model.temporal_filters``):
shapes, exact folding, full-channel reconstruction, validation, and the default path unchanged."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from neuralign.config import ModelConfig
from neuralign.errors import ConfigError
from neuralign.models import BrainAE, ProjectedEncoder, TSConvEncoder, build_model
from neuralign.models.folding import FoldedTSConvEncoder, fold_for_inference

C, T, F_DIM = 24, 60, 12


def _model(projection: int | None, k: int = 8, **kw) -> BrainAE:
    torch.manual_seed(0)
    return build_model(ModelConfig(k=k, spatial_projection=projection, **kw), n_chans=C,
                       n_times=T, feature_dim=F_DIM)


def _trained_like(model: BrainAE) -> BrainAE:
    """Non-trivial BatchNorm statistics and affine parameters everywhere, as after training."""
    g = torch.Generator().manual_seed(1)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.3)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.weight.data.copy_(torch.randn(bn.num_features, generator=g))
        bn.bias.data.copy_(torch.randn(bn.num_features, generator=g))
    return model.eval()


def test_projection_shapes_and_parameters():
    model = _model(6)
    enc = model.brain_encoder
    assert isinstance(enc, ProjectedEncoder) and isinstance(enc.backbone, TSConvEncoder)
    assert enc.projection.weight.shape == (6, C, 1) and enc.projection.bias is None
    assert enc.backbone.n_chans == 6  # TSConv's spatial kernel spans the virtual channels
    assert enc.backbone.spatial[0].weight.shape == (8, 8, 6, 1)
    x = torch.randn(3, C, T)
    assert enc.project(x).shape == (3, 6, T)
    assert model.encode_brain(x).shape == (3, F_DIM)
    with pytest.raises(ValueError, match=rf"expected input \(batch, {C}, n_times\)"):
        model.encode_brain(torch.randn(3, 6, T))
    # the projection trains with the rest
    out = model.train()(x, torch.randn(3, F_DIM))
    (out["zb"].square().sum() + out["xb_from_b"].square().sum()).backward()
    assert enc.projection.weight.grad is not None and enc.projection.weight.grad.abs().sum() > 0


def test_fewer_temporal_filters_shapes():
    model = _model(None, temporal_filters=3)
    enc = model.brain_encoder
    assert type(enc) is TSConvEncoder and enc.k_temporal == 3 and enc.k == 8
    assert enc.temporal.weight.shape == (3, 1, 1, 26)
    assert enc.spatial[0].weight.shape == (8, 3, C, 1)  # 3 filters per channel -> k maps
    assert model.encode_brain(torch.randn(2, C, T)).shape == (2, F_DIM)
    assert model.brain_decoder.k == 8  # the decoder is today's


@pytest.mark.parametrize("projection, filters, m1, m2, s", [
    (6, None, 26, 5, 5), (1, None, 9, 4, 3), (C, None, 3, 1, 1), (None, 3, 26, 5, 5),
    (None, 1, 9, 4, 3), (5, 2, 26, 5, 5)])
def test_folding_with_a_front_end_is_exact(projection, filters, m1, m2, s):
    model = _trained_like(_model(projection, m1=m1, m2=m2, s=s, temporal_filters=filters))
    x = torch.randn(4, C, T)
    with torch.no_grad():
        ref = model.encode_brain(x)
        before = model.brain_encoder
        folded = fold_for_inference(copy.deepcopy(model))
        out = folded.encode_brain(x)
    if projection is None:
        assert isinstance(folded.brain_encoder, FoldedTSConvEncoder)
    else:
        assert isinstance(folded.brain_encoder, ProjectedEncoder)
        assert isinstance(folded.brain_encoder.backbone, FoldedTSConvEncoder)
        assert isinstance(before.backbone, TSConvEncoder)  # the model folded from is untouched
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_fold_for_inference_swaps_backbone_only_and_shares_projection():
    model = _trained_like(_model(5))
    original = model.brain_encoder
    fold_for_inference(model)
    assert model.brain_encoder is not original
    assert model.brain_encoder.projection is original.projection
    assert not model.brain_encoder.training


@pytest.mark.parametrize("front_end", [{"projection": 4}, {"temporal_filters": 2}])
def test_reconstruct_outputs_every_input_channel(front_end):
    model = _trained_like(_model(front_end.get("projection"),
                                 temporal_filters=front_end.get("temporal_filters")))
    x = torch.randn(2, C, T)
    x[:, :5] = 0.0  # masked channels
    with torch.no_grad():
        rec = model.reconstruct(x)
        folded = fold_for_inference(copy.deepcopy(model)).reconstruct(x)
    assert rec.shape == (2, C, T)
    assert model.brain_decoder.n_chans == C
    torch.testing.assert_close(folded, rec, rtol=1e-5, atol=1e-5)
    out = model(x, torch.randn(2, F_DIM))
    assert out["xb_from_b"].shape == out["xb_from_i"].shape == (2, C, T)


def test_default_is_todays_model():
    """No option: the same modules, parameter names, shapes and initial values as before."""
    default = _model(None)
    torch.manual_seed(0)
    by_hand = BrainAE(C, T, F_DIM, k=8)  # the constructor as it was called before the option
    assert type(default.brain_encoder) is TSConvEncoder
    a, b = default.state_dict(), by_hand.state_dict()
    assert list(a) == list(b)
    assert not any("projection.weight" in k and k.startswith("brain_encoder") for k in a)
    assert default.brain_encoder.k_temporal == default.brain_encoder.k
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _old_style_bundle(tmp_path, model_config: ModelConfig):
    """A bundle whose manifest has no ``spatial_projection`` key, as written before it existed."""
    from neuralign.bundle import _content_hash
    from neuralign.realtime.bench.mua import synthetic_mua_bundle

    out = synthetic_mua_bundle(tmp_path / "bundle", n_chans=C, n_templates=6,
                               model_config=model_config)
    path = out / "manifest.json"
    raw = json.loads(path.read_text())
    del raw["model"]["config"]["spatial_projection"], raw["model"]["config"]["temporal_filters"]
    raw["content_hash"] = _content_hash(out, raw)
    path.write_text(json.dumps(raw, indent=1, sort_keys=True))
    return out


def test_bundle_without_the_option_loads_and_decodes_as_before(tmp_path):
    from neuralign.bundle import load_bundle
    from neuralign.realtime.inference import Decoder

    bundle = load_bundle(_old_style_bundle(tmp_path, ModelConfig(k=8)))
    assert bundle.manifest.model.config.spatial_projection is None
    assert bundle.manifest.model.config.temporal_filters is None
    model = bundle.build_model()
    assert type(model.brain_encoder) is TSConvEncoder
    # the reference: today's model built by hand from the same weights, folded
    m = bundle.manifest.model
    ref = BrainAE(m.n_chans, m.n_times, m.feature_dim, k=8)
    ref.load_state_dict(bundle.state_dict)
    ref = fold_for_inference(ref.eval())
    epochs = [np.random.default_rng(i).standard_normal((C, m.n_times)).astype(np.float32)
              for i in range(4)]  # a full batch: the reference runs the same shape
    dec = Decoder(bundle, batch_size=4, device="cpu")
    got = dec.decode(epochs)
    with torch.inference_mode():
        z = torch.nn.functional.normalize(ref.encode_brain(torch.from_numpy(np.stack(epochs))), dim=-1)
    for d, zi in zip(got, z.numpy()):
        np.testing.assert_array_equal(d.embedding, zi)


def test_synthetic_mua_bundle_is_rebuilt_for_another_model(tmp_path):
    from neuralign.bundle import load_bundle
    from neuralign.realtime.bench.mua import synthetic_mua_bundle

    out = tmp_path / "mua"
    synthetic_mua_bundle(out, n_chans=C, n_templates=4, model_config=ModelConfig(k=8))
    first = (out / "manifest.json").read_text()
    synthetic_mua_bundle(out, n_chans=C, n_templates=4, model_config=ModelConfig(k=8))
    assert (out / "manifest.json").read_text() == first  # same model: reused
    synthetic_mua_bundle(out, n_chans=C, n_templates=4,
                         model_config=ModelConfig(k=8, spatial_projection=4))
    model = load_bundle(out).build_model()
    assert isinstance(model.brain_encoder, ProjectedEncoder)


def test_tvsd_config_model_builds_at_1024_channels():
    from neuralign.config import load_config

    cfg = load_config("tvsd").model
    model = build_model(cfg, n_chans=1024, n_times=200, feature_dim=16)
    assert model.encode_brain(torch.zeros(1, 1024, 200)).shape[0] == 1


@pytest.mark.parametrize("key", ["spatial_projection", "temporal_filters"])
@pytest.mark.parametrize("value, message", [
    (0, "expected greater than or equal to 1"),
    (-3, "expected greater than or equal to 1"),
    ("many", "expected a valid integer"),
    (2.5, "expected a valid integer"),
])
def test_config_rejects_bad_values(key, value, message):
    from neuralign.config import config_from_dict

    with pytest.raises(ConfigError, match=f"model.{key}: {message}"):
        config_from_dict({"dataset": {"kind": "tvsd"}, "model": {key: value}})


@pytest.mark.parametrize("model, message", [
    ({"name": "vna", "spatial_projection": 8}, "spatial_projection is a BrainAE option"),
    ({"name": "vna", "temporal_filters": 4}, "temporal_filters is an option of BrainAE's TSConv"),
    ({"backbone": "eegnet", "temporal_filters": 4}, "with backbone 'eegnet' has none"),
])
def test_config_rejects_front_ends_where_there_is_no_such_encoder(model, message):
    from neuralign.config import config_from_dict

    with pytest.raises(ConfigError, match=message):
        config_from_dict({"dataset": {"kind": "tvsd"}, "model": model})


def test_projection_larger_than_the_input_is_refused_at_build():
    with pytest.raises(ValueError, match=f"between 1 and the {C} input channels, got {C + 1}"):
        _model(C + 1)


def test_bench_overrides_make_a_tvsd_like_simulated_config():
    from neuralign.config import load_config
    from neuralign.offline.mua_encoder_bench import (
        TODAY,
        MuaBenchSettings,
        choose_candidate,
        simulation_overrides,
        training_overrides,
    )

    s = MuaBenchSettings()
    cfg = load_config("tvsd", simulation_overrides(s, 7)
                      + training_overrides(s, "spatial_projection=32"))
    sim = cfg.dataset.simulation
    assert (cfg.dataset.kind, sim.modality, sim.n_mua_channels, sim.sfreq, sim.seed) == (
        "simulated", "mua", 1024, 1000.0, 7)
    assert (cfg.preprocessing.tmin, cfg.preprocessing.tmax) == (0.0, 0.2)
    assert (cfg.model.spatial_projection, cfg.model.temporal_filters) == (32, None)
    today = load_config("tvsd", training_overrides(s, TODAY)).model
    assert (today.spatial_projection, today.temporal_filters) == (None, None)
    for c in s.candidates:
        load_config("tvsd", training_overrides(s, c))  # every default candidate validates
    rows = [{"candidate": c, "retrieval_averaged": {"top1": t1, "top5": t5}}
            for c, t1, t5 in [("a", 0.2, 0.5), ("b", 0.3, 0.5), ("c", 0.3, 0.5)]]
    assert choose_candidate(rows, {"a": 1.0, "b": 3.0, "c": 2.0}) == "c"  # ties: the faster
