"""Alignment and reconstruction losses (BrainAE Section 3.4, VNA Section 3.1.3, baselines).

``tau`` may be a float or a 0-d tensor (a learned temperature's gradient then flows through it).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from neuralign.config import LossWeights


def cosine_logits(zb: Tensor, zi: Tensor, tau: float | Tensor) -> Tensor:
    """(n_brain, n_image) cosine similarities divided by the temperature."""
    return F.normalize(zb, dim=-1) @ F.normalize(zi, dim=-1).T / tau


def info_nce(
    zb: Tensor, zi: Tensor, tau: float | Tensor = 0.07, symmetric: bool = True
) -> Tensor:
    """InfoNCE on cosine similarity; row i of ``zb`` and ``zi`` are the positive pair.

    ``symmetric=True`` (default) is CLIP's loss: the mean of brain->image and image->brain
    cross-entropies. ``symmetric=False`` is BrainAE eq. (1) literally (brain->image only).
    Equals log(N) for unrelated embeddings and tends to 0 for aligned, distinct ones.
    """
    if zb.shape != zi.shape or zb.ndim != 2:
        raise ValueError(f"expected two (batch, dim) tensors, got {tuple(zb.shape)} and {tuple(zi.shape)}")
    logits = cosine_logits(zb, zi, tau)
    target = torch.arange(logits.shape[0], device=logits.device)
    loss = F.cross_entropy(logits, target)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, target))
    return loss


def feature_mse(zb: Tensor, zi: Tensor, normalize: bool = True) -> Tensor:
    """L_fea (BrainAE eq. 2) between brain and image embeddings.

    ``normalize=True`` (default): squared distance between the L2-normalised vectors, summed over
    dimensions and averaged over the batch, i.e. ``mean(2 - 2 cos)`` in [0, 4]. It lives on the
    same sphere InfoNCE uses, is on InfoNCE's scale whatever the embedding width, and cannot be
    lowered by shrinking both embeddings (a trainable image projection could otherwise drive raw
    MSE to 0 by scaling zb and zi down together). ``normalize=False``: the paper's literal
    element-wise MSE on raw embeddings (what ``nn.MSELoss`` gives).
    """
    if zb.shape != zi.shape:
        raise ValueError(f"embedding shapes differ: {tuple(zb.shape)} vs {tuple(zi.shape)}")
    if normalize:
        diff = F.normalize(zb, dim=-1) - F.normalize(zi, dim=-1)
        return diff.pow(2).sum(dim=-1).mean()
    return F.mse_loss(zb, zi)


def reconstruction_mse(x_hat: Tensor, x: Tensor) -> Tensor:
    """Element-wise MSE between reconstructed and recorded activity (BrainAE eqs. 3-4)."""
    if x_hat.shape != x.shape:
        raise ValueError(f"reconstruction shape {tuple(x_hat.shape)} != target {tuple(x.shape)}")
    return F.mse_loss(x_hat, x)


def brainae_loss(
    outputs: Mapping[str, Tensor],
    x: Tensor,
    f: Tensor | None,
    weights: LossWeights,
    tau: float | Tensor = 0.07,
    symmetric: bool = True,
    fea_normalize: bool = True,
) -> tuple[Tensor, dict[str, float]]:
    """Weighted BrainAE objective: con * L_con + fea * L_fea + recon_b * L_reconB + recon_i * L_reconI.

    ``outputs`` is :meth:`BrainAE.forward`'s dict; ``x`` the recorded activity. ``f`` (the frozen
    image features) is not needed by the four terms -- ``outputs['zi']`` already carries it -- and
    is accepted so callers pass the whole batch. Every component is computed and returned (detached,
    as floats) for logging; a weight of 0 removes the term from the total and from the gradient
    (ablation). Returns ``(total, {"con", "fea", "recon_b", "recon_i", "total"})``.
    """
    del f
    terms = {
        "con": info_nce(outputs["zb"], outputs["zi"], tau, symmetric=symmetric),
        "fea": feature_mse(outputs["zb"], outputs["zi"], normalize=fea_normalize),
        "recon_b": reconstruction_mse(outputs["xb_from_b"], x),
        "recon_i": reconstruction_mse(outputs["xb_from_i"], x),
    }
    total = outputs["zb"].new_zeros(())
    for name, value in terms.items():
        w = float(getattr(weights, name))
        if w != 0.0:
            total = total + w * value
    parts = {name: float(value.detach()) for name, value in terms.items()}
    parts["total"] = float(total.detach())
    return total, parts


def clip_loss(outputs: Mapping[str, Tensor], tau: float | Tensor = 0.07) -> tuple[Tensor, dict[str, float]]:
    """VNA objective: symmetric InfoNCE between neural and image embeddings."""
    loss = info_nce(outputs["zb"], outputs["zi"], tau, symmetric=True)
    return loss, {"con": float(loss.detach()), "total": float(loss.detach())}
