"""Exact large-batch training in bounded memory: gradient caching with full-batch BatchNorm.

BrainAE trains with batch 800. Run as one graph, every activation of all 800 samples is alive at
once (13.6 GB at 63 x 250). InfoNCE over 800 pairs is not a sum over micro-batches, and neither is
BatchNorm in training mode, so the batch cannot simply be split. This module computes the
full-batch gradient exactly with graphs of one micro-batch at a time:

1. **Statistics.** For each BatchNorm layer in call order, a no-grad pass over the micro-batches
   (stopped at that layer) accumulates its input's per-channel mean and biased variance over the
   WHOLE batch (Chan's parallel combination in float64). Later passes normalise with these fixed
   values, so every forward value equals the full-batch one.
2. **Embedding loss.** A no-grad pass gives all embeddings ``zb``, ``zi``; the contrastive and
   feature terms (which couple samples) are evaluated on the full batch and differentiated with
   respect to the embeddings only (and the temperature).
3. **Main sweep.** Each micro-batch is re-run with a graph; ``<dL/dzb, zb> + <dL/dzi, zi>`` plus
   its share of the reconstruction terms (means over the full batch) is back-propagated.
   BatchNorm's mean and variance enter this graph as leaf tensors, so the sweep also accumulates
   ``dL/dmu`` and ``dL/dvar`` of each layer (their direct use).
4. **Statistic sweeps**, last BatchNorm first: the statistics are themselves functions of the
   batch (``mu = mean(a)``, ``var = mean((a - mu)^2)``), so each micro-batch is re-run up to that
   layer's input ``a`` and ``<dL/dmu, sum(a)/N> + <dL/dvar, sum((a - mu)^2)/N>`` is
   back-propagated (``dvar/dmu = 0`` at the mean, so ``mu`` is held constant there). This adds the
   terms a full-batch BatchNorm backward has through its statistics, including those that reach
   earlier layers' statistics, which is why the layers go last to first.

The result is the full-batch gradient, BatchNorm statistic terms included, to float tolerance
(tests/offline/test_grad_cache.py compares it with one big backward in training mode). Running
statistics are updated once per step from the full-batch statistics, as one big forward would.
Alternatives considered: ghost BatchNorm (micro-batch statistics) changes the function; fixing
the full-batch statistics without step 4 gives exact forward values but a biased gradient. Step 4
re-runs only the layers below each BatchNorm (the decoder's last transposed conv is not among
them). Cost on BrainAE at 63 x 250: about 2.7x the arithmetic of one graph over the same batch
(measured: 8.5 s vs 3.0 s of CPU for 256 samples); what it buys is memory that no longer grows
with the batch (13.7 GB -> 2.2 GB peak RSS at the paper's batch).

**Across processes** (``distributed=True``, DDP under ``torchrun``): each rank holds a slice of
the batch. Step 1 combines every rank's moments (all-gather, Chan's combination in rank order, so
all ranks hold the same statistics: synchronised BatchNorm over the whole batch); step 2
all-gathers the embeddings and differentiates the loss of the WHOLE batch (InfoNCE over all
pairs, not per rank) w.r.t. the rank's own rows; step 4 all-reduces ``dL/dmu`` and ``dL/dvar``
first. Each rank's ``.grad`` is then its share, and their SUM (all-reduce, no division) is the
single-process full-batch gradient (tests/offline/test_ddp_grad_cache.py). ``sample_loss`` must
divide by the whole batch's size.

Dropout: each micro-batch re-seeds the RNG identically in every pass, so all passes see the same
masks (the masks differ from a one-graph run's, the distribution does not).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class _Stop(Exception):
    """Raised by a BatchNorm to end a pass once its input is known."""


@dataclass
class _Moments:
    """Running per-channel count, mean and M2 (Chan et al.), float64."""

    n: int = 0
    mean: Tensor | None = None
    m2: Tensor | None = None

    def add(self, a: Tensor, dims: list[int]) -> None:
        a = a.detach().double()
        nb = a.numel() // a.shape[1]
        mb = a.mean(dim=dims)
        self.merge(nb, mb, (a - mb.view(_shape(a))).square().sum(dim=dims))

    def merge(self, nb: int, mb: Tensor, m2b: Tensor) -> None:
        """Fold in another group's count, mean and M2 (Chan et al.'s pairwise update)."""
        if self.mean is None:
            self.n, self.mean, self.m2 = nb, mb, m2b
            return
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta.square() * (self.n * nb / n)
        self.n = n


def _full(t: Tensor) -> Tensor:
    """float16/bfloat16 (autocast) -> float32; float32/float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _shape(a: Tensor) -> list[int]:
    return [1, a.shape[1]] + [1] * (a.ndim - 2)


def _dims(a: Tensor) -> list[int]:
    return [0] + list(range(2, a.ndim))


@dataclass
class _LayerState:
    """One BatchNorm layer's full-batch statistics (graph leaves) and sample count."""

    mean: Tensor
    var: Tensor
    n: int


@dataclass
class _Controller:
    """What the patched BatchNorm forwards do in the current pass."""

    layers: list[nn.Module]
    stats: dict[int, _LayerState] = field(default_factory=dict)
    collect: int | None = None  # accumulate this layer's input moments, then stop
    moments: _Moments | None = None
    stop_at: int | None = None  # keep this layer's input (with graph), then stop
    captured: Tensor | None = None
    probe: list[int] | None = None  # record the call order, act as identity

    def forward(self, index: int, bn: nn.Module, x: Tensor) -> Tensor:
        if self.probe is not None:
            self.probe.append(index)
            return x
        if index == self.collect:
            assert self.moments is not None
            self.moments.add(x, _dims(x))
            raise _Stop
        if index == self.stop_at:
            self.captured = x
            raise _Stop
        st = self.stats[index]
        shape = _shape(x)
        y = (x - st.mean.view(shape)) * torch.rsqrt(st.var.view(shape) + bn.eps)
        if bn.affine:
            y = y * bn.weight.view(shape) + bn.bias.view(shape)
        return y


@contextlib.contextmanager
def _patched(ctrl: _Controller) -> Iterator[None]:
    """Route every training-mode BatchNorm through ``ctrl`` (instance attribute, removed after)."""
    for i, bn in enumerate(ctrl.layers):
        bn.forward = lambda x, i=i, bn=bn: ctrl.forward(i, bn, x)
    try:
        yield
    finally:
        for bn in ctrl.layers:
            del bn.forward


def _batchnorms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, _BN) and m.training]


def _call_order(layers: list[nn.Module], run: Callable[[], object]) -> list[nn.Module]:
    """The BatchNorm layers sorted by when a forward calls them (each must run exactly once).

    Probed with the layers as identities, so running statistics are not touched."""
    ctrl = _Controller(layers, probe=[])
    with _patched(ctrl), torch.no_grad():
        run()
    order = ctrl.probe
    if sorted(order) != list(range(len(layers))):
        raise ValueError("gradient caching needs every BatchNorm to run exactly once per forward")
    return [layers[i] for i in order]


def _all_gather_rows(t: Tensor, sizes: list[int]) -> Tensor:
    """Every rank's rows of ``t`` (ranks may hold different numbers), concatenated in rank order."""
    import torch.distributed as dist

    pad = max(sizes) - t.shape[0]
    if pad:
        t = torch.cat([t, t.new_zeros((pad, *t.shape[1:]))])
    parts = [torch.empty_like(t) for _ in sizes]
    dist.all_gather(parts, t.contiguous())
    return torch.cat([p[:k] for p, k in zip(parts, sizes)])


def _all_moments(mo: _Moments) -> _Moments:
    """Combine every rank's moments (same order on every rank, hence identical results)."""
    import torch.distributed as dist

    packed = torch.cat([torch.tensor([float(mo.n)], dtype=torch.float64, device=mo.mean.device),
                        mo.mean, mo.m2])
    parts = [torch.empty_like(packed) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, packed)
    c = mo.mean.numel()
    out = _Moments()
    for p in parts:
        nb = int(round(float(p[0])))
        if nb == 0:
            continue
        out.merge(nb, p[1:1 + c], p[1 + c:])
    return out


def _update_running(bn: nn.Module, st: _LayerState) -> None:
    """What one full-batch training forward does to the running statistics."""
    if not bn.track_running_stats or bn.running_mean is None:
        return
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        m = (1.0 / float(bn.num_batches_tracked)) if bn.momentum is None else bn.momentum
        unbiased = st.var.detach() * (st.n / max(st.n - 1, 1))
        bn.running_mean.mul_(1 - m).add_(st.mean.detach().to(bn.running_mean.dtype), alpha=m)
        bn.running_var.mul_(1 - m).add_(unbiased.to(bn.running_var.dtype), alpha=m)


EmbeddingLoss = Callable[[Tensor, Tensor], tuple[Tensor, dict[str, Tensor]]]
SampleLoss = Callable[[Mapping[str, Tensor], slice], tuple[Tensor, dict[str, Tensor]]]


@dataclass
class _Sweep:
    """One step's micro-batches: how to re-run micro-batch ``j`` with the same RNG every pass."""

    model: nn.Module
    inputs: tuple[Tensor, ...]
    chunks: list[slice]
    autocast: Callable[[], contextlib.AbstractContextManager]
    seed: int
    n: int  # this rank's rows
    world: int = 1
    rank: int = 0
    sizes: list[int] = field(default_factory=list)  # every rank's rows, in rank order
    distributed: bool = False

    @property
    def device(self) -> torch.device:
        return self.inputs[0].device

    def run(self, j: int) -> Mapping[str, Tensor]:
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed + j)
            with self.autocast():
                return self.model(*(t[self.chunks[j]] for t in self.inputs))


def _make_sweep(model: nn.Module, inputs: tuple[Tensor, ...], micro_batch: int,
                autocast: Callable[[], contextlib.AbstractContextManager],
                distributed: bool) -> _Sweep:
    """The micro-batches of ``inputs``; with ``distributed`` also every rank's row count."""
    n = inputs[0].shape[0]
    world, rank, sizes = 1, 0, [n]
    if distributed:
        import torch.distributed as dist

        world, rank = dist.get_world_size(), dist.get_rank()
        dev = inputs[0].device
        sizes_t = [torch.zeros(1, dtype=torch.int64, device=dev) for _ in range(world)]
        dist.all_gather(sizes_t, torch.tensor([n], dtype=torch.int64, device=dev))
        sizes = [int(t) for t in sizes_t]
    chunks = [slice(i, min(i + micro_batch, n)) for i in range(0, n, micro_batch)]
    seed = int(torch.randint(0, 2**62, (1,)).item())
    return _Sweep(model, inputs, chunks, autocast, seed, n, world, rank, sizes, distributed)


def _collect_statistics(sweep: _Sweep, ctrl: _Controller, dtype: torch.dtype) -> None:
    """Step 1: each BatchNorm's full-batch mean and variance, layer by layer (leaf tensors)."""
    for li in range(len(ctrl.layers)):
        ctrl.collect, ctrl.moments = li, _Moments()
        with torch.no_grad():
            for j in range(len(sweep.chunks)):
                with contextlib.suppress(_Stop):
                    sweep.run(j)
        mo = ctrl.moments
        if sweep.distributed:
            mo = _all_moments(mo)
        ctrl.stats[li] = _LayerState(mo.mean.to(dtype).requires_grad_(),
                                     (mo.m2 / mo.n).to(dtype).requires_grad_(), mo.n)
    ctrl.collect, ctrl.moments = None, None


def _embedding_gradients(sweep: _Sweep, embedding_loss: EmbeddingLoss, scale: float
                         ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """Step 2: the embeddings without a graph; ``(dL/dzb, dL/dzi)`` of this rank's rows, the
    embedding loss and its parts."""
    with torch.no_grad():
        outs = [sweep.run(j) for j in range(len(sweep.chunks))]
    zb = torch.cat([_full(o["zb"]) for o in outs])
    zi = torch.cat([_full(o["zi"]) for o in outs])
    del outs
    sizes, world, rank = sweep.sizes, sweep.world, sweep.rank
    if sweep.distributed:  # the whole batch's embeddings, this rank's rows at sum(sizes[:rank])
        zb, zi = _all_gather_rows(zb, sizes), _all_gather_rows(zi, sizes)
    zb, zi = zb.requires_grad_(), zi.requires_grad_()
    emb_loss, parts = embedding_loss(zb, zi)
    # Every rank evaluates the same whole-batch loss; parameters it uses directly (a learned
    # temperature) get 1/world of their gradient per rank, the embeddings all of it.
    (emb_loss * (scale / world)).backward()
    own = slice(sum(sizes[:rank]), sum(sizes[:rank]) + sweep.n)
    return zb.grad[own] * world, zi.grad[own] * world, emb_loss, parts


def _main_sweep(sweep: _Sweep, g_zb: Tensor, g_zi: Tensor, sample_loss: SampleLoss | None,
                scale: float, total: Tensor, sums: dict[str, Tensor]) -> Tensor:
    """Step 3: one graph per micro-batch; adds the per-sample parts to ``sums``, returns the
    total loss."""
    for j, rows in enumerate(sweep.chunks):
        out = sweep.run(j)
        surrogate = (_full(out["zb"]) * g_zb[rows]).sum() + (_full(out["zi"]) * g_zi[rows]).sum()
        if sample_loss is not None:
            loss_j, parts_j = sample_loss(out, rows)
            surrogate = surrogate + loss_j * scale  # g_zb, g_zi carry the scale already
            total = total + loss_j.detach()
            for k, v in parts_j.items():
                sums[k] = sums.get(k, 0.0) + v.detach()
        surrogate.backward()
    return total


def _statistics_backward(sweep: _Sweep, ctrl: _Controller) -> None:
    """Step 4: the statistics' own dependence on the batch, last layer first."""
    for li in reversed(range(len(ctrl.layers))):
        st = ctrl.stats[li]
        g_mean, g_var = st.mean.grad, st.var.grad
        if sweep.distributed:  # dL/dmu, dL/dvar of the whole batch (every rank's rows use them)
            import torch.distributed as dist

            g_mean = torch.zeros_like(st.mean) if g_mean is None else g_mean.clone()
            g_var = torch.zeros_like(st.var) if g_var is None else g_var.clone()
            dist.all_reduce(g_mean)
            dist.all_reduce(g_var)
        if g_mean is None and g_var is None:
            continue
        ctrl.stop_at = li
        for j in range(len(sweep.chunks)):
            with contextlib.suppress(_Stop):
                sweep.run(j)
            a = _full(ctrl.captured)
            ctrl.captured = None
            dims, shape = _dims(a), _shape(a)
            surrogate = a.new_zeros(())
            if g_mean is not None:
                surrogate = surrogate + (a.sum(dim=dims) * g_mean).sum() / st.n
            if g_var is not None:
                dev = (a - st.mean.detach().view(shape)).square().sum(dim=dims)
                surrogate = surrogate + (dev * g_var).sum() / st.n
            surrogate.backward()
        ctrl.stop_at = None


def _reduce_sample_parts(emb_loss: Tensor, parts: dict[str, Tensor], total: Tensor,
                         sums: dict[str, Tensor]) -> Tensor:
    """The per-sample terms were this rank's share of the whole batch's: sum them over ranks
    (``sums`` in place); returns the whole batch's total."""
    import torch.distributed as dist

    keys = sorted(k for k in sums if k not in parts)
    local = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=emb_loss.device)
                         for v in [total - emb_loss.detach()] + [sums[k] for k in keys]])
    dist.all_reduce(local)
    sums.update({k: local[1 + i] for i, k in enumerate(keys)})
    return emb_loss.detach() + local[0]


def cached_backward(
    model: nn.Module,
    inputs: tuple[Tensor, ...],
    micro_batch: int,
    embedding_loss: EmbeddingLoss,
    sample_loss: SampleLoss | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    scale: float = 1.0,
    distributed: bool = False,
) -> dict[str, float]:
    """Accumulate into ``.grad`` the gradient of the full-batch loss; return its parts (floats).

    ``model(*micro_inputs)`` must return a mapping with embeddings ``zb`` and ``zi``.
    ``embedding_loss(zb, zi)`` is the part that couples samples (full batch, differentiated
    w.r.t. the embeddings and any parameter it uses directly, e.g. a learned temperature).
    ``sample_loss(outputs, rows)`` is the micro-batch's share of terms that are means over samples
    (already divided by the FULL batch size); ``rows`` is the micro-batch's slice of the batch.
    The total loss is their sum. Model parameters' ``.grad`` are accumulated (zero them first),
    multiplied by ``scale`` (a mixed-precision loss scale; the returned parts are unscaled).
    ``distributed``: ``inputs`` are this rank's slice of a batch split over the default process
    group (every rank calls this with the same ``micro_batch``); ``.grad`` receives the rank's
    share, to be summed over ranks; the returned parts are those of the whole batch.
    """
    sweep = _make_sweep(model, inputs, micro_batch, autocast, distributed)
    dtype = next(model.parameters()).dtype
    layers = _batchnorms(model)
    if layers:
        layers = _call_order(layers, lambda: model(*(t[:2] for t in inputs)))
    ctrl = _Controller(layers)
    with _patched(ctrl):
        _collect_statistics(sweep, ctrl, dtype)
        g_zb, g_zi, emb_loss, parts = _embedding_gradients(sweep, embedding_loss, scale)
        sums: dict[str, Tensor] = {k: v.detach() for k, v in parts.items()}
        total = _main_sweep(sweep, g_zb, g_zi, sample_loss, scale, emb_loss.detach(), sums)
        _statistics_backward(sweep, ctrl)
    for li, bn in enumerate(layers):
        _update_running(bn, ctrl.stats[li])
    if distributed:
        total = _reduce_sample_parts(emb_loss, parts, total, sums)
    result = {k: float(v) for k, v in sums.items()}
    result["total"] = float(total)
    return result


def brainae_losses(weights, tau: Tensor | float, n: int, targets: Tensor,
                   fea_normalize: bool = True) -> tuple[EmbeddingLoss, SampleLoss]:
    """BrainAE's objective split for :func:`cached_backward`: (con, fea) on embeddings, the two
    reconstruction MSEs per micro-batch (each a mean over the full batch's elements)."""
    from neuralign.models.losses import feature_mse, info_nce

    w = {k: float(getattr(weights, k)) for k in ("con", "fea", "recon_b", "recon_i")}

    def embedding_loss(zb: Tensor, zi: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        terms = {"con": info_nce(zb, zi, tau), "fea": feature_mse(zb, zi, normalize=fea_normalize)}
        total = sum((w[k] * v for k, v in terms.items() if w[k] != 0.0), zb.new_zeros(()))
        return total, terms

    def sample_loss(out: Mapping[str, Tensor], rows: slice) -> tuple[Tensor, dict[str, Tensor]]:
        x = targets[rows]
        scale = x.shape[0] / n
        terms = {k: F.mse_loss(_full(out[key]), x) * scale
                 for k, key in (("recon_b", "xb_from_b"), ("recon_i", "xb_from_i"))}
        total = sum((w[k] * v for k, v in terms.items() if w[k] != 0.0), x.new_zeros(()))
        return total, terms

    return embedding_loss, sample_loss
