"""Real-NVP flows on vectors (Dinh et al. 2017), as FLIG uses them (Eq. 5-6, Appendix B).

Direction convention (FLIG Sec. III-C): a flow maps the base variable to data, ``x = F(z)``;
``F.inverse(x)`` gives ``z``. Both return the log |det| of their own Jacobian, so
``-log p(x) = -log N(F^-1(x); 0, I) - logdet(F^-1 at x)`` (Eq. 4 / 7).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _mlp(d_in: int, d_out: int, hidden: int, n_hidden: int) -> nn.Sequential:
    """d -> hidden x n_hidden -> d_out with Tanh (Appendix B: d -> 128 -> 128 -> 128 -> M - d)."""
    layers: list[nn.Module] = []
    width = d_in
    for _ in range(n_hidden):
        layers += [nn.Linear(width, hidden), nn.Tanh()]
        width = hidden
    layers.append(nn.Linear(width, d_out))
    nn.init.zeros_(layers[-1].weight)  # each unit starts as the identity (standard for Real-NVP)
    nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


class AffineCoupling(nn.Module):
    """One basic flow unit, Eq. 5: the kept slice conditions scale s(.) and translation t(.).

    ``flip`` swaps which half is kept, so consecutive units update both halves. The log-scale
    is bounded with tanh times a learned per-dimension scale (the stabiliser of the Real-NVP
    reference code), which keeps exp(s) finite early in adversarial training.
    """

    def __init__(self, dim: int, hidden: int = 128, n_hidden: int = 3, flip: bool = False):
        super().__init__()
        if dim < 2:
            raise ValueError("a coupling layer needs at least 2 dimensions")
        self.dim, self.flip = dim, flip
        self.d = dim // 2 if not flip else dim - dim // 2
        self.s_net = _mlp(self.d, dim - self.d, hidden, n_hidden)
        self.t_net = _mlp(self.d, dim - self.d, hidden, n_hidden)
        self.s_scale = nn.Parameter(torch.ones(dim - self.d))

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.flip:
            return x[:, self.dim - self.d:], x[:, : self.dim - self.d]
        return x[:, : self.d], x[:, self.d:]

    def _join(self, kept: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
        return torch.cat([changed, kept] if self.flip else [kept, changed], dim=1)

    def _scale_shift(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.s_scale * torch.tanh(self.s_net(kept)), self.t_net(kept)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept, other = self._split(z)
        s, t = self._scale_shift(kept)
        return self._join(kept, other * torch.exp(s) + t), s.sum(dim=1)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept, other = self._split(x)
        s, t = self._scale_shift(kept)
        return self._join(kept, (other - t) * torch.exp(-s)), -s.sum(dim=1)


class RealNVP(nn.Module):
    """A stack of ``n_units`` alternating affine couplings over R^dim with a N(0, I) base.

    ``permute``: before every unit after the first, a fixed pseudo-random permutation of the
    dimensions (seeded by the unit's index, so it is not part of the weights), so the slices
    differ from unit to unit as in Real-NVP's varying masks; off, the two halves are the same in
    every unit, as FLIG's Eq. 5 describes. A permutation has |det| = 1: log-determinants are
    unchanged.
    """

    def __init__(self, dim: int, n_units: int, hidden: int = 128, n_hidden: int = 3,
                 permute: bool = False):
        super().__init__()
        self.dim, self.permute = dim, permute
        self.units = nn.ModuleList(
            AffineCoupling(dim, hidden, n_hidden, flip=bool(i % 2)) for i in range(n_units))
        perms = [torch.randperm(dim, generator=torch.Generator().manual_seed(1000 + i))
                 if permute and i > 0 else torch.arange(dim) for i in range(n_units)]
        self.register_buffer("perms", torch.stack(perms) if perms else torch.zeros(0, dim, dtype=torch.long),
                             persistent=False)
        self.register_buffer("inv_perms", torch.argsort(self.perms, dim=1), persistent=False)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z -> x = F(z) and log|det dF/dz|."""
        logdet = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
        for i, unit in enumerate(self.units):
            if self.permute and i > 0:
                z = z[:, self.perms[i]]
            z, ld = unit(z)
            logdet = logdet + ld
        return z, logdet

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x -> z = F^-1(x) and log|det dF^-1/dx|."""
        logdet = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for i in range(len(self.units) - 1, -1, -1):
            x, ld = self.units[i].inverse(x)
            if self.permute and i > 0:
                x = x[:, self.inv_perms[i]]
            logdet = logdet + ld
        return x, logdet

    def nll(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample -log p(x) (Eq. 4) and the latent z = F^-1(x)."""
        z, logdet = self.inverse(x)
        log_base = -0.5 * (z ** 2).sum(dim=1) - 0.5 * self.dim * math.log(2 * math.pi)
        return -(log_base + logdet), z
