"""FLIG: Real-NVP invertibility and log-determinant, the RSA loss (Eq. 11), Jacobian clamping
(Eq. 16), the exact up-sampling convolution of the decoder, and the inference API's shape
contract."""

import numpy as np
import pytest
import torch

from neuralign.models.flig import FLIG, UpsampleConv2d, jacobian_clamp, rdm, rsa_loss
from neuralign.models.realnvp import RealNVP


def _random_flow(dim: int, n_units: int, seed: int = 0, permute: bool = False) -> RealNVP:
    torch.manual_seed(seed)
    flow = RealNVP(dim, n_units, hidden=16, n_hidden=2, permute=permute).double()
    with torch.no_grad():  # zero-initialised output layers make a flow the identity: perturb
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow


@pytest.mark.parametrize("permute", [False, True])
@pytest.mark.parametrize("dim,n_units", [(6, 15), (5, 1), (7, 4)])
def test_flow_inverts_both_directions(dim, n_units, permute):
    flow = _random_flow(dim, n_units, permute=permute)
    z = torch.randn(32, dim, dtype=torch.float64)
    x, ld_f = flow(z)
    z_back, ld_i = flow.inverse(x)
    assert not torch.allclose(x, z, atol=1e-3)  # the flow does something
    torch.testing.assert_close(z_back, z, atol=1e-10, rtol=0)
    x_back, _ = flow(flow.inverse(x)[0])
    torch.testing.assert_close(x_back, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(ld_f, -ld_i, atol=1e-10, rtol=0)


@pytest.mark.parametrize("permute", [False, True])
@pytest.mark.parametrize("n_units", [1, 3])
def test_logdet_matches_autograd(n_units, permute):
    flow = _random_flow(5, n_units, seed=3, permute=permute)
    z = torch.randn(4, 5, dtype=torch.float64)
    _, logdet = flow(z)
    _, logdet_inv = flow.inverse(z)
    for i in range(len(z)):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], z[i])
        torch.testing.assert_close(logdet[i], torch.linalg.slogdet(jac)[1], atol=1e-10, rtol=0)
        jac_inv = torch.autograd.functional.jacobian(lambda v: flow.inverse(v[None])[0][0], z[i])
        torch.testing.assert_close(logdet_inv[i], torch.linalg.slogdet(jac_inv)[1], atol=1e-10, rtol=0)


def test_nll_is_a_normalised_density_for_identity_flow():
    flow = RealNVP(2, 2, hidden=8, n_hidden=1).double()  # zero-init = identity
    x = torch.tensor([[0.0, 0.0], [1.0, -2.0]], dtype=torch.float64)
    nll, z = flow.nll(x)
    expected = 0.5 * (x ** 2).sum(1) + np.log(2 * np.pi)
    torch.testing.assert_close(nll, expected)
    torch.testing.assert_close(z, x)


def test_rsa_loss_zero_for_identical_rdms():
    z = torch.randn(6, 4)
    assert float(rsa_loss(z, z)) == pytest.approx(0.0, abs=1e-6)
    assert float(rsa_loss(z, 3.0 * z)) == pytest.approx(0.0, abs=1e-6)  # cosine: scale-free
    assert float(rsa_loss(z, torch.randn(6, 4))) > 0.1


def test_rsa_loss_matches_hand_computation():
    zx = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    zs = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, -1.0]])

    def cos(a, b):
        return a @ b / np.sqrt(a @ a) / np.sqrt(b @ b)

    m_xx = np.array([[(1 - cos(zx[i], zx[j])) / 2 for j in range(4)] for i in range(4)])
    m_xs = np.array([[(1 - cos(zx[i], zs[j])) / 2 for j in range(4)] for i in range(4)])
    # e.g. M_xs[0, 1] = (1 - 1/sqrt 2) / 2; M_xx[0, 3] = 1
    assert m_xs[0, 1] == pytest.approx((1 - 2 ** -0.5) / 2)
    assert m_xx[0, 3] == pytest.approx(1.0)
    expected = np.sqrt(((m_xx - m_xs) ** 2).sum())
    got = rsa_loss(torch.tensor(zx), torch.tensor(zs))
    assert float(got) == pytest.approx(expected, rel=1e-9)
    np.testing.assert_allclose(rdm(torch.tensor(zx), torch.tensor(zs)).numpy(), m_xs, atol=1e-12)


def test_jacobian_clamp_penalises_only_outside_the_interval():
    xf = torch.randn(16, 5)
    # G scales every perturbation by exactly c, so Q == c.
    for c, expected in ((0.07, 0.0), (0.2, (0.2 - 0.1) ** 2), (0.01, (0.01 - 0.05) ** 2)):
        val = jacobian_clamp(lambda v, c=c: c * v, xf, lam_plus=0.1, lam_minus=0.05)
        assert float(val) == pytest.approx(expected, rel=1e-4, abs=1e-9)


def test_generate_and_encode_shape_contract():
    torch.manual_seed(0)
    model = FLIG(n_units=8, image_size=32, channels=1, n_units_x=3, n_units_s=1, hidden=16,
                 cae_width=0.125).eval()
    resp = np.abs(np.random.default_rng(0).normal(size=(20, 8))).astype(np.float32) * 5
    model.set_response_scaling(resp)
    scaled = model.scale_responses(torch.as_tensor(resp))
    assert float(scaled.min()) == pytest.approx(-1) and float(scaled.max()) == pytest.approx(1)
    imgs = model.generate(resp[:3])
    assert imgs.shape == (3, 32, 32) and imgs.dtype == np.float32
    assert 0.0 <= imgs.min() and imgs.max() <= 1.0
    enc = model.encode(imgs)
    assert enc.shape == (3, 8)
    with pytest.raises(ValueError, match=r"\(n, 8\)"):
        model.generate(resp[:, :5])
    rgb = FLIG(n_units=4, image_size=16, channels=3, n_units_x=2, hidden=8, cae_width=0.125)
    assert rgb.generate(np.zeros((2, 4), np.float32)).shape == (2, 16, 16, 3)


@pytest.mark.parametrize("k", [3, 5, 7])
def test_upsample_conv_equals_nearest_upsampling_then_conv(k):
    """Table V's (x2 nearest up-sampling, 'same' conv) pair, computed on the low-res grid."""
    torch.manual_seed(k)
    m = UpsampleConv2d(5, 3, k).double()
    x = torch.randn(2, 5, 7, 6, dtype=torch.float64, requires_grad=True)
    ref = m.conv(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    out = m(x)
    assert out.shape == (2, 3, 14, 12)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad((ref * g).sum(), [x, m.conv.weight, m.conv.bias])
    grads_fold = torch.autograd.grad((out * g).sum(), [x, m.conv.weight, m.conv.bias])
    for a, b in zip(grads_fold, grads):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=0)
