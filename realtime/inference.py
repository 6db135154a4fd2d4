"""Batched inference: encoder -> cosine top-k over the bundle's template bank.

The model is loaded as fast as it allows without changing a single decision: TSConv's temporal
conv + average pool + BatchNorm (and the spatial conv + BatchNorm) are folded into strided
convolutions (:func:`neuralign.models.folding.fold_for_inference`, exact to float tolerance;
2.4-3.3x faster at batch 1-4 on one thread). Plain eager torch is the runtime: on this model
TorchScript (frozen, traced or scripted) saved under 0.1 ms of a 0.4 ms folded forward at batch
1 and ``torch.compile`` needs a compiler toolchain at start-up for no measured gain, so neither is
worth a dependency or a slow first call (``neuralign bench latency`` reports the forward time).

Shapes: every call runs on one of a few preallocated batch shapes (``buckets``, see
:func:`neuralign.realtime.batcher.shape_buckets`). On CUDA there is one bucket, the full
``batch_size``, copied through pinned memory with non-blocking transfers, so the kernel time does
not depend on the load; on CPU the buckets are 1, 2, 4 ... ``batch_size`` and a batch runs on the
smallest that holds it, so no compute is spent on zero padding. Padding rows never influence the
real rows (eval-mode BatchNorm, per-sample convolutions), so the bucket does not change results.

On CUDA the forward, the normalisation and the top-k of that one shape are captured once as a
CUDA graph (``cuda_graph``): a call is then one host-to-device copy into the graph's static
input, one replay and one copy back, with no per-kernel launch overhead or allocator work from
Python, so its time does not depend on how busy the CPU is. Capture falls back to eager calls
(logged) when the model cannot be captured.

Early encoding (CPU, folded TSConv encoders): each frame of the temporal convolution reads only
its own few samples and the head is linear, so an epoch's first frames can be encoded while its
last samples are still arriving (:meth:`Decoder.encode_part`, kept in a :class:`PartialEncoding`);
once the epoch is complete, :meth:`Decoder.decode` only encodes the frames left and adds them up.
Same embedding to float tolerance (the sum runs in a different order).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from neuralign.bundle import Bundle
from neuralign.devices import resolve_device
from neuralign.models.folding import FoldedTSConvEncoder, fold_for_inference
from neuralign.realtime.batcher import bucket_for, shape_buckets

log = logging.getLogger(__name__)


@dataclass
class PartialEncoding:
    """The head output (without its bias) of an epoch's first ``n_frames`` frames, one row per
    decoder input of the epoch (its single trial, then the average of its presentations when
    ``n_before`` presentations of the image came before it; None: no average row)."""

    n_frames: int
    acc: np.ndarray  # (rows, embed_dim) float32
    n_before: int | None = None


@dataclass
class Decoded:
    embedding: np.ndarray  # (d,) L2-normalised
    topk_ids: list[str]
    topk_scores: list[float]
    #: every template's cosine, in bank order (only from a decoder that keeps them: a calibrated
    #: bundle's, whose probabilities are a softmax over the whole bank)
    scores: np.ndarray | None = None


class Decoder:
    """The bundle's brain encoder + template bank, ready to decode (warmed up on creation).

    ``fold``: fold TSConv's linear stages at load (exact; off only to compare against).
    ``buckets``: batch shapes to run on (default: :func:`shape_buckets` for the device).
    """

    def __init__(self, bundle: Bundle, batch_size: int = 8, top_k: int = 5,
                 device: str | torch.device = "auto", torch_threads: int | None = 1,
                 compile: bool = False, fold: bool = True,
                 buckets: Sequence[int] | None = None, cuda_graph: bool = True):
        self.device = resolve_device(device)
        if torch_threads and self.device.type == "cpu":
            torch.set_num_threads(torch_threads)
        model = bundle.build_model().eval()
        self.folded = fold
        if fold:
            model = fold_for_inference(model)
        self.model = model.to(self.device)
        if compile:
            self.model = torch.compile(self.model)
        self.batch_size = batch_size
        self.top_k = min(top_k, len(bundle.template_ids))
        self.template_ids = bundle.template_ids
        self.bank = torch.from_numpy(np.ascontiguousarray(bundle.template_embeddings)).to(self.device)
        cal = bundle.manifest.calibration
        #: softmax temperature of the scores (None, an older bundle: results carry no probabilities)
        self.temperature = cal.temperature if cal is not None else None
        #: T_r of the average of r presentations (None: T for every r)
        self.repetition_temperatures = cal.repetition_temperatures if cal is not None else None
        #: return every template's score with each epoch (the probabilities' input), computed
        #: anyway for the top-k: one copy instead of a second bank product downstream
        self.keep_scores = self.temperature is not None
        m = bundle.manifest.model
        self.buckets = (sorted(set(buckets)) if buckets
                        else shape_buckets(batch_size, self.device.type))
        if self.buckets[-1] != batch_size:
            raise ValueError(f"the largest bucket {self.buckets[-1]} must be the batch size "
                             f"{batch_size}")
        self.shape = (batch_size, m.n_chans, m.n_times)
        self._hosts = {b: torch.zeros((b, m.n_chans, m.n_times), dtype=torch.float32)
                       for b in self.buckets}
        if self.device.type == "cuda":
            self._hosts = {b: h.pin_memory() for b, h in self._hosts.items()}
        self.bucket_counts = dict.fromkeys(self.buckets, 0)  # calls per shape (instrumentation)
        #: (graph, static input, static outputs) of the full batch shape on CUDA, else None
        self._graph: tuple | None = None
        enc = getattr(self.model, "brain_encoder", None)
        #: the encoder whose first frames can be encoded early (None: this model cannot)
        self.early_encoder: FoldedTSConvEncoder | None = (
            enc if isinstance(enc, FoldedTSConvEncoder) and self.device.type == "cpu" else None)
        if self.early_encoder is not None:
            self._head_bias = self.early_encoder.head.bias.detach().numpy()
            self._bank_np = self.bank.numpy()
        self.warmup()
        if cuda_graph and self.device.type == "cuda" and not compile:
            self._graph = self._capture()

    @property
    def cuda_graph(self) -> bool:
        """Calls replay a captured CUDA graph (CUDA only)."""
        return self._graph is not None

    def _capture(self) -> tuple | None:
        """Capture the full-shape forward as a CUDA graph (None, logged, if it cannot be)."""
        try:
            with torch.inference_mode():
                static_in = torch.zeros(self.shape, device=self.device)
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):  # warm-up on a side stream, as capture requires
                    for _ in range(3):
                        self._forward(static_in)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static_out = self._forward(static_in)
            graph.replay()
            torch.cuda.synchronize()
        except Exception as exc:  # an op that cannot be captured: eager calls, same results
            log.warning("CUDA graph capture failed (%r); running the model eagerly", exc)
            return None
        log.info("decoder: batch shape %s captured as a CUDA graph", self.shape)
        return graph, static_in, static_out

    @property
    def _host(self) -> torch.Tensor:
        """The full-size host buffer (the fixed shape of the GPU path)."""
        return self._hosts[self.batch_size]

    def warmup(self, n: int = 3) -> None:
        """Run every bucket a few times: the first calls allocate and pick kernels."""
        for host in self._hosts.values():
            for _ in range(n):
                self._run(host)

    def touch(self, n_rows: int = 2) -> None:
        """Run the bucket of ``n_rows`` on whatever its buffer holds, results discarded: brings
        the weights and buffers back into the CPU caches just before a real batch (the
        caller holds the inference lock; nothing it returns or counts changes)."""
        self._run(self._hosts[bucket_for(min(n_rows, self.batch_size), self.buckets)])

    def frames_ready(self, n_cols: int) -> int:
        """Encoder frames the first ``n_cols`` samples of an epoch determine (0: no early
        encoding for this model)."""
        enc = self.early_encoder
        return 0 if enc is None else enc.frames_ready(n_cols)

    def frame_columns(self, j0: int, j1: int) -> tuple[int, int]:
        """The epoch columns ``[start, stop)`` encoder frames ``[j0, j1)`` read."""
        if self.early_encoder is None:
            raise ValueError("this decoder's model has no early encoding")
        return self.early_encoder.frame_columns(j0, j1)

    def encode_part(self, rows: np.ndarray, j0: int, j1: int, start: int = 0) -> np.ndarray:
        """Head output without bias of frames ``[j0, j1)`` of ``rows`` (R, C, n): R epochs'
        columns from ``start`` on, for a :class:`PartialEncoding`."""
        if self.early_encoder is None:
            raise ValueError("this decoder's model has no early encoding")
        return self.early_encoder.head_part(rows, j0, j1, start)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Embeddings, top-k scores and indices, and (``keep_scores``) every template's score."""
        z = torch.nn.functional.normalize(self.model.encode_brain(x), dim=-1)
        every = z @ self.bank.T
        scores, idx = every.topk(self.top_k, dim=1)
        return (z, scores, idx, every) if self.keep_scores else (z, scores, idx)

    @torch.inference_mode()
    def _run(self, host: torch.Tensor) -> tuple[torch.Tensor, ...]:
        graph = self._graph
        if graph is not None and host.shape == graph[1].shape:
            g, static_in, out = graph
            static_in.copy_(host, non_blocking=True)
            g.replay()
        else:
            out = self._forward(host.to(self.device, non_blocking=True))
        return tuple(t.cpu() for t in out)

    def decode(self, epochs: list[np.ndarray],
               parts: Sequence[tuple[int, np.ndarray] | None] | None = None) -> list[Decoded]:
        """Decode up to ``batch_size`` epochs (C, T) in one call on the smallest bucket.

        ``parts``: per epoch, None or ``(n_frames, acc)``: its first frames' head output,
        already encoded (:class:`PartialEncoding`); only the frames after them are encoded."""
        if len(epochs) > self.batch_size:
            raise ValueError(f"{len(epochs)} epochs > batch size {self.batch_size}")
        if not epochs:
            return []
        if parts is not None and any(p is not None for p in parts):
            z, scores, idx, *every = self._finish(epochs, parts)
        else:
            b = bucket_for(len(epochs), self.buckets)
            host = self._hosts[b]
            for i, ep in enumerate(epochs):
                host[i].copy_(torch.from_numpy(ep))
            if len(epochs) < b:
                host[len(epochs):].zero_()
            self.bucket_counts[b] += 1
            z, scores, idx, *every = (t.numpy() for t in self._run(host))
        return [Decoded(z[i], [self.template_ids[j] for j in idx[i].tolist()],
                        scores[i].tolist(), every[0][i] if every else None)
                for i in range(len(epochs))]

    def _finish(self, epochs: list[np.ndarray],
                parts: Sequence[tuple[int, np.ndarray] | None]) -> tuple[np.ndarray, ...]:
        """:meth:`_forward`'s outputs (numpy) for epochs some of which are partly encoded: the
        others encoded whole, the partly encoded ones grouped by how many frames they have.
        In numpy, like :meth:`FoldedTSConvEncoder.head_part`: a few small products after a
        pause, where torch's dispatch costs more than they do."""
        enc = self.early_encoder
        if enc is None:
            raise ValueError("partly encoded epochs for a model without early encoding")
        z = np.empty((len(epochs), len(self._head_bias)), np.float32)
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(parts):
            groups.setdefault(-1 if p is None else p[0], []).append(i)
        for j0, rows in groups.items():
            if j0 < 0:  # not encoded early (a stale average): every frame, here in numpy too -
                # the thread's first torch call would cost ~6 ms of set-up, the rare one later
                # ~1.5 ms after a pause (numpy ~1.1)
                acc = enc.head_part(np.stack([epochs[i] for i in rows]), 0, enc.n_frames)
                acc += self._head_bias
                z[rows] = acc
                continue
            acc = np.stack([parts[i][1] for i in rows])  # type: ignore[index]
            acc += self._head_bias
            if j0 < enc.n_frames:  # only the columns the frames left read
                c0, c1 = enc.frame_columns(j0, enc.n_frames)
                acc += enc.head_part(np.stack([epochs[i][:, c0:c1] for i in rows]), j0,
                                     enc.n_frames, start=c0)
            z[rows] = acc
        z /= np.maximum(np.sqrt(np.einsum("ij,ij->i", z, z))[:, None], 1e-12)  # F.normalize
        every = z @ self._bank_np.T
        idx = np.argsort(-every, axis=1, kind="stable")[:, :self.top_k]
        scores = every[np.arange(len(z))[:, None], idx]
        return (z, scores, idx, every) if self.keep_scores else (z, scores, idx)

    def decode_all(self, epochs: list[np.ndarray],
                   parts: Sequence[tuple[int, np.ndarray] | None] | None = None
                   ) -> list[Decoded]:
        """Decode any number of epochs, ``batch_size`` at a time (``parts``: see decode)."""
        out: list[Decoded] = []
        for i in range(0, len(epochs), self.batch_size):
            out += self.decode(epochs[i : i + self.batch_size],
                               None if parts is None else parts[i : i + self.batch_size])
        return out

    @torch.inference_mode()
    def reconstruct(self, epoch: np.ndarray, masked: list[int]) -> np.ndarray:
        """Fill ``masked`` channel rows of one epoch from the others (BrainAE Sec. 4.6)."""
        x = torch.from_numpy(epoch.copy()).unsqueeze(0)
        x[:, masked] = 0.0
        return self.model.reconstruct(x.to(self.device))[0].cpu().numpy()
