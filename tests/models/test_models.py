"""Shape, gradient, determinism and export checks for every registered model; loss properties."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from neuralign.config import LossWeights, ModelConfig
from neuralign.models import (
    BrainAE,
    TSConvDecoder,
    TSConvEncoder,
    backbone_names,
    brainae_loss,
    build_model,
    clip_loss,
    feature_mse,
    get_backbone_class,
    info_nce,
    model_names,
)

C, T, F_DIM, B = 63, 250, 32, 6


# ---------------------------------------------------------------------------------------------
# Table 6 / Table 7


def test_tsconv_encoder_table6_shapes() -> None:
    enc = TSConvEncoder(n_chans=C, n_times=T, embed_dim=16)
    shapes = enc.layer_shapes(batch_size=2)
    assert shapes["temporal"] == (2, 40, 63, 225)
    assert shapes["pool"] == (2, 40, 63, 45)
    assert shapes["spatial"] == (2, 40, 1, 45)
    assert shapes["flatten"] == (2, 1800)
    assert shapes["output"] == (2, 16)
    assert enc.n_features == 1800


def test_tsconv_decoder_table7_mirrors_encoder() -> None:
    dec = TSConvDecoder(n_chans=C, n_times=T, embed_dim=16)
    shapes = dec.layer_shapes(batch_size=2)
    assert shapes["unflatten"] == (2, 40, 1, 45)
    assert shapes["spatial"] == (2, 40, 63, 45)
    assert shapes["upsample"] == (2, 40, 63, 225)
    assert shapes["temporal"] == (2, 1, 63, 250)
    assert shapes["output"] == (2, 63, 250)


@pytest.mark.parametrize(("n_chans", "n_times"), [(271, 200), (1024, 200), (63, 250), (17, 100), (5, 31)])
def test_tsconv_other_modalities_and_odd_lengths(n_chans: int, n_times: int) -> None:
    enc = TSConvEncoder(n_chans, n_times, embed_dim=8)
    dec = TSConvDecoder(n_chans, n_times, embed_dim=8)
    x = torch.randn(2, n_chans, n_times)
    z = enc(x)
    assert z.shape == (2, 8)
    assert enc.n_features == 40 * ((n_times - 26 - 5 + 1) // 5 + 1)
    assert dec(z).shape == (2, n_chans, n_times)
    assert enc.spatial[0].kernel_size == (n_chans, 1)


def test_tsconv_too_short_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="n_times"):
        TSConvEncoder(63, 20, embed_dim=8)


def test_decoder_output_is_unbounded_unless_tanh() -> None:
    torch.manual_seed(0)
    z = torch.randn(4, 16) * 50
    assert TSConvDecoder(C, T, 16).eval()(z).abs().max() > 1.0
    assert TSConvDecoder(C, T, 16, activation="tanh").eval()(z).abs().max() <= 1.0


# ---------------------------------------------------------------------------------------------
# Every registered model: shapes, gradients, determinism, safetensors round trip


def _brain(b: int = B, c: int = C, t: int = T) -> Tensor:
    return torch.randn(b, c, t)


def _images(b: int = B) -> Tensor:
    return torch.randn(b, 3, 64, 64)


# name -> (factory, inputs factory, loss(model, inputs, output), output check)
Case = tuple[Callable[[], nn.Module], Callable[[], tuple], Callable[[nn.Module, tuple, object], Tensor], Callable]


def _brainae_case(**kw) -> Case:
    def make() -> nn.Module:
        return BrainAE(C, T, F_DIM, **kw)

    def loss(m, inputs, out):
        return brainae_loss(out, inputs[0], inputs[1], LossWeights(), m.tau)[0]

    def check(m, out):
        e = m.embed_dim
        assert out["zb"].shape == (B, e) and out["zi"].shape == (B, e)
        assert out["xb_from_b"].shape == (B, C, T) and out["xb_from_i"].shape == (B, C, T)

    return make, lambda: (_brain(), torch.randn(B, F_DIM)), loss, check


def _regression_target(out: Tensor) -> Tensor:
    return torch.randn(out.shape, generator=torch.Generator().manual_seed(1))


MODEL_CASES: dict[str, Case] = {
    "brainae": _brainae_case(embed_dim=24),
    "vna": (
        lambda: build_model(ModelConfig(name="vna", embed_dim=16, hidden=64), 20, 3, None),
        lambda: (torch.randn(B, 20, 3), _images()),
        lambda m, inputs, out: clip_loss(out, m.tau)[0],
        lambda m, out: out["zb"].shape == (B, 16) and out["zi"].shape == (B, 16) or pytest.fail(),
    ),
    "direct_encoding": (
        lambda: get_model("direct_encoding")(n_chans=20, n_times=3, hidden=64),
        lambda: (_images(),),
        lambda m, inputs, out: ((out - _regression_target(out)) ** 2).mean(),
        lambda m, out: out.shape == (B, 20, 3) or pytest.fail(),
    ),
    "direct_decoding": (
        lambda: get_model("direct_decoding")(n_chans=20, n_times=3, hidden=64, latent=16),
        lambda: (torch.randn(B, 20, 3),),
        lambda m, inputs, out: ((out - _regression_target(out)) ** 2).mean(),
        lambda m, out: out.shape == (B, 3, 64, 64) or pytest.fail(),
    ),
}


def get_model(name: str):
    from neuralign.models import get_model_class

    return get_model_class(name)


def _backbone_case(name: str) -> Case:
    def make() -> nn.Module:
        if name != "tsconv":
            pytest.importorskip("braindecode")
        return get_backbone_class(name)(n_chans=C, n_times=T, embed_dim=16)

    return (
        make,
        lambda: (_brain(),),
        lambda m, inputs, out: ((out - _regression_target(out)) ** 2).mean(),
        lambda m, out: out.shape == (B, 16) or pytest.fail(),
    )


ALL_CASES = {**MODEL_CASES, **{f"backbone:{n}": _backbone_case(n) for n in backbone_names()}}
ALL_CASES["brainae[identity]"] = _brainae_case(image_projection="identity")


def test_every_registered_name_has_a_case() -> None:
    assert set(model_names()) <= set(ALL_CASES)
    assert {f"backbone:{n}" for n in backbone_names()} <= set(ALL_CASES)


def _forward(model: nn.Module, inputs: tuple):
    return model(*inputs)


@pytest.mark.parametrize("name", sorted(ALL_CASES))
def test_registered_model(name: str, tmp_path) -> None:
    make, make_inputs, loss_fn, check = ALL_CASES[name]
    torch.manual_seed(0)
    model = make()
    inputs = make_inputs()
    for t in inputs:
        assert not t.requires_grad

    # shapes + backward: finite, non-zero gradient on every trainable parameter
    model.train()
    out = _forward(model, inputs)
    check(model, out)
    loss = loss_fn(model, inputs, out)
    assert torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
            assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"
        else:
            assert p.grad is None
    for t in inputs:  # frozen inputs (e.g. precomputed image features) get no gradient
        assert t.grad is None

    # eval-mode determinism
    model.eval()
    with torch.no_grad():
        a, b = _forward(model, inputs), _forward(model, inputs)
    for x, y in zip(_flat(a), _flat(b)):
        assert torch.equal(x, y)

    # safetensors round trip into a freshly built model
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    torch.manual_seed(123)
    fresh = make()
    fresh.load_state_dict(load_file(str(path)))
    fresh.eval()
    with torch.no_grad():
        c = _forward(fresh, inputs)
    for x, y in zip(_flat(a), _flat(c)):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def _flat(out) -> list[Tensor]:
    return [out[k] for k in sorted(out)] if isinstance(out, dict) else [out]


def test_build_model_from_config() -> None:
    model = build_model(ModelConfig(), n_chans=C, n_times=T, feature_dim=F_DIM)
    assert isinstance(model, BrainAE) and model.embed_dim == F_DIM
    cfg = ModelConfig(embed_dim=16, image_projection="identity")
    with pytest.raises(ValueError, match="identity"):
        build_model(cfg, n_chans=C, n_times=T, feature_dim=F_DIM)


def test_missing_braindecode_names_the_extra() -> None:
    from neuralign.models import braindecode_available

    if braindecode_available():
        pytest.skip("braindecode is installed")
    with pytest.raises(ImportError, match=r"neuralign\[braindecode\]"):
        BrainAE(C, T, F_DIM, backbone="eegnet")


def test_learned_temperature_gets_a_gradient() -> None:
    model = BrainAE(C, T, F_DIM, learn_tau=True, tau=0.1)
    assert math.isclose(float(model.tau.detach()), 0.1, rel_tol=1e-5)
    out = model(_brain(), torch.randn(B, F_DIM))
    brainae_loss(out, _brain(), None, LossWeights(), model.tau)[0].backward()
    assert model.temperature.log_inv_tau.grad is not None


# ---------------------------------------------------------------------------------------------
# Losses


def test_info_nce_random_is_log_n() -> None:
    torch.manual_seed(0)
    n = 256
    zb, zi = torch.randn(n, 512), torch.randn(n, 512)
    assert abs(float(info_nce(zb, zi, tau=1.0)) - math.log(n)) < 0.05


def test_info_nce_aligned_is_near_zero() -> None:
    z = torch.eye(16)
    assert float(info_nce(z, 3.0 * z, tau=0.01)) < 1e-6
    assert float(info_nce(z, z, tau=0.01, symmetric=False)) < 1e-6


def test_info_nce_symmetric() -> None:
    torch.manual_seed(0)
    zb, zi = torch.randn(8, 4), torch.randn(8, 4)
    torch.testing.assert_close(info_nce(zb, zi, 0.1), info_nce(zi, zb, 0.1))
    one_way = info_nce(zb, zi, 0.1, symmetric=False)
    other_way = info_nce(zi, zb, 0.1, symmetric=False)
    torch.testing.assert_close(info_nce(zb, zi, 0.1), 0.5 * (one_way + other_way))


def test_feature_mse_normalized_is_scale_free() -> None:
    torch.manual_seed(0)
    zb, zi = torch.randn(8, 4), torch.randn(8, 4)
    torch.testing.assert_close(feature_mse(zb, zi), feature_mse(10 * zb, 0.1 * zi))
    cos = torch.nn.functional.cosine_similarity(zb, zi).mean()
    torch.testing.assert_close(feature_mse(zb, zi), 2 - 2 * cos)
    torch.testing.assert_close(feature_mse(zb, zi, normalize=False), ((zb - zi) ** 2).mean())


@pytest.mark.parametrize("off", ["con", "fea", "recon_b", "recon_i"])
def test_ablation_weight_zeroes_component(off: str) -> None:
    torch.manual_seed(0)
    model = BrainAE(C, T, F_DIM)
    x, f = _brain(), torch.randn(B, F_DIM)
    out = model(x, f)
    full, parts = brainae_loss(out, x, f, LossWeights(), 0.07)
    ablated, parts2 = brainae_loss(out, x, f, LossWeights(**{off: 0.0}), 0.07)
    assert parts2[off] == pytest.approx(parts[off])  # still reported for logging
    assert float(ablated.detach()) == pytest.approx(float(full.detach()) - parts[off], rel=1e-5)


def test_brainae_overfits_infonce() -> None:
    torch.manual_seed(0)
    n, c, t = 16, 16, 64  # small shapes keep 100 steps to a few seconds on 2 busy cores
    x, f = torch.randn(n, c, t), torch.randn(n, F_DIM)
    model = BrainAE(c, t, F_DIM, embed_dim=32, k=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    model.train()
    first = None
    for _ in range(100):
        out = model(x, f)
        loss, parts = brainae_loss(out, x, f, LossWeights(), model.tau)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = parts["con"] if first is None else first
    model.eval()
    with torch.no_grad():
        final = float(info_nce(model.encode_brain(x), model.encode_image(f), model.tau))
    assert first > 2.0
    assert final < 0.3 * first, (first, final)
