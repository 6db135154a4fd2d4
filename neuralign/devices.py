"""Where a model runs: one reading of ``"auto"`` for training, the engine and the generator.

Why one function: "auto" must mean the same device offline and live, and asking for CUDA on a
machine without it must fail the same way everywhere (one line naming the setting), not deep in a
model's first forward.
"""

from __future__ import annotations

import torch

from neuralign.errors import UserError


def resolve_device(spec: str | torch.device = "auto", setting: str = "device") -> torch.device:
    """The :class:`torch.device` of ``spec``: ``"auto"`` is CUDA when available, else the CPU.

    Parameters
    ----------
    spec
        ``"auto"``, ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``), or a device.
    setting
        The config key or flag named when CUDA is asked for but absent.
    """
    if isinstance(spec, str) and spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{setting}: 'cuda' requested but no CUDA device is available")
    return device
