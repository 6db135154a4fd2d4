"""Fixed-shape batched inference: encoder -> cosine top-k over the bundle's template bank.

Every call runs the model on a tensor of exactly ``batch_size`` epochs (zero-padded), so the time
an inference takes does not depend on how many epochs happened to be ready: the latency budget is
fixed. On CUDA the batch goes through pinned memory with non-blocking copies; on CPU the same code
runs with a small, fixed number of intra-op threads so it does not starve acquisition.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from neuralign.bundle import Bundle

log = logging.getLogger(__name__)


@dataclass
class Decoded:
    embedding: np.ndarray  # (d,) L2-normalised
    topk_ids: list[str]
    topk_scores: list[float]


class Decoder:
    """The bundle's brain encoder + template bank, ready to decode (warmed up on creation)."""

    def __init__(self, bundle: Bundle, batch_size: int = 8, top_k: int = 5,
                 device: str | torch.device = "auto", torch_threads: int | None = 1,
                 compile: bool = False):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if torch_threads and self.device.type == "cpu":
            torch.set_num_threads(torch_threads)
        self.model = bundle.build_model().to(self.device)
        if compile:
            self.model = torch.compile(self.model)
        self.batch_size = batch_size
        self.top_k = min(top_k, len(bundle.template_ids))
        self.template_ids = bundle.template_ids
        self.bank = torch.from_numpy(np.ascontiguousarray(bundle.template_embeddings)).to(self.device)
        m = bundle.manifest.model
        self.shape = (batch_size, m.n_chans, m.n_times)
        self._host = torch.zeros(self.shape, dtype=torch.float32)
        if self.device.type == "cuda":
            self._host = self._host.pin_memory()
        self.warmup()

    def warmup(self, n: int = 3) -> None:
        for _ in range(n):
            self._run(self._host)

    @torch.inference_mode()
    def _run(self, host: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = host.to(self.device, non_blocking=True)
        z = torch.nn.functional.normalize(self.model.encode_brain(x), dim=-1)
        sim = z @ self.bank.T
        scores, idx = sim.topk(self.top_k, dim=1)
        return z.cpu(), scores.cpu(), idx.cpu()

    def decode(self, epochs: list[np.ndarray]) -> list[Decoded]:
        """Decode up to ``batch_size`` epochs (C, T) in one fixed-shape call."""
        if len(epochs) > self.batch_size:
            raise ValueError(f"{len(epochs)} epochs > batch size {self.batch_size}")
        self._host.zero_()
        for i, ep in enumerate(epochs):
            self._host[i].copy_(torch.from_numpy(ep))
        z, scores, idx = self._run(self._host)
        return [Decoded(z[i].numpy(), [self.template_ids[j] for j in idx[i].tolist()],
                        scores[i].tolist()) for i in range(len(epochs))]

    def decode_all(self, epochs: list[np.ndarray]) -> list[Decoded]:
        """Decode any number of epochs, ``batch_size`` at a time (each call fixed-shape)."""
        out: list[Decoded] = []
        for i in range(0, len(epochs), self.batch_size):
            out += self.decode(epochs[i : i + self.batch_size])
        return out

    @torch.inference_mode()
    def reconstruct(self, epoch: np.ndarray, masked: list[int]) -> np.ndarray:
        """Fill ``masked`` channel rows of one epoch from the others (BrainAE Sec. 4.6)."""
        x = torch.from_numpy(epoch.copy()).unsqueeze(0)
        x[:, masked] = 0.0
        return self.model.reconstruct(x.to(self.device))[0].cpu().numpy()
