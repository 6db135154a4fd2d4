"""One learned input layer per subject in front of a shared brain encoder.

Why: subjects differ in head shape, source orientation, cap placement and impedance, so the same
brain activity reaches the sensors through a different mixing in each of them. A (C, C) channel
mixing per subject (a "subject layer", as in Défossez et al. 2023's MEG decoders) lets one shared
encoder learn what the subjects have in common; a new subject then needs only its own layer, and
a little fine-tuning, instead of a model of its own.

Training calls the model with batches of one subject at a time and says which with
:meth:`SubjectEncoder.select`; nothing else changes in the model's contract. A run adapted to one
subject (``train --init``) is a plain BrainAE with ``spatial_projection = C``: its subject layer is
that projection (:func:`subject_layer_for_new_subject` starts it), so bundles, folding and the
engine need nothing new.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SubjectEncoder(nn.Module):
    """(b, C, T) -> the active subject's (C, C) channel mixing -> ``backbone``.

    The layers start at the identity (the shared encoder first sees each subject as recorded) and
    are kept out of weight decay by their name (``layers``: a decay would pull them to zero, not
    to the identity).
    """

    def __init__(self, n_subjects: int, n_chans: int, backbone: nn.Module) -> None:
        super().__init__()
        if n_subjects < 1:
            raise ValueError(f"n_subjects must be >= 1, got {n_subjects}")
        self.n_subjects, self.n_chans = n_subjects, n_chans
        self.n_times = getattr(backbone, "n_times", None)
        self.embed_dim = getattr(backbone, "embed_dim", None)
        self.layers = nn.Parameter(torch.eye(n_chans).repeat(n_subjects, 1, 1))
        self.backbone = backbone
        self.active = 0

    def select(self, subject: int) -> None:
        """Route the next calls through subject ``subject``'s layer (0-based)."""
        if not 0 <= subject < self.n_subjects:
            raise ValueError(f"subject index {subject} out of range (0..{self.n_subjects - 1})")
        self.active = int(subject)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 3 or x.shape[1] != self.n_chans:
            raise ValueError(f"expected input (batch, {self.n_chans}, n_times), got {tuple(x.shape)}")
        return self.backbone(torch.einsum("oc,bct->bot", self.layers[self.active], x))


def select_subject(model: nn.Module, subject: int) -> None:
    """Point ``model``'s subject layers at ``subject`` (a no-op for a single-subject model)."""
    enc = getattr(model, "brain_encoder", None)
    if isinstance(enc, SubjectEncoder):
        enc.select(subject)


def subject_layer_for_new_subject(layers: Tensor) -> Tensor:
    """The starting layer of a subject the pretraining never saw: the mean of the pretrained
    subjects' layers (their common part; the fine-tuning learns the rest). (S, C, C) -> (C, C)."""
    return layers.detach().mean(dim=0)
