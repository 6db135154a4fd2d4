"""BrainAE (brain encoder/decoder + projected frozen image features in one shared space).

The image encoder itself (ViT / CLIP / EVA-CLIP) is frozen and run before training, so this module
takes its precomputed features ``f`` as input and only owns the trainable projection.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from neuralign.config import ModelConfig

from .registry import ModelOptions, ModelTraits
from .spatial_projection import ProjectedEncoder, check_n_virtual
from .subject_layers import SubjectEncoder
from .tsconv import DecoderActivation, TSConvDecoder, TSConvEncoder

log = logging.getLogger(__name__)

ImageProjection = Literal["linear", "identity"]


class Temperature(nn.Module):
    """InfoNCE temperature stored as CLIP's log inverse temperature (saved with the weights).

    Learned (a parameter, clamped at 1/tau <= 100 like CLIP) or fixed (a persistent buffer).
    """

    def __init__(self, tau: float = 0.07, learn: bool = False) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        value = torch.tensor(math.log(1.0 / tau))
        if learn:
            self.log_inv_tau = nn.Parameter(value)
        else:
            self.register_buffer("log_inv_tau", value)

    def forward(self) -> Tensor:
        return 1.0 / self.log_inv_tau.clamp(max=math.log(100.0)).exp()


class BrainAE(nn.Module):
    """BrainAE: E_B (brain encoder), D_B (mirrored brain decoder), image projection.

    ``forward(x, f)`` returns ``zb = E_B(x)``, ``zi = P(f)``, ``xb_from_b = D_B(zb)`` (auto-encoding,
    also masked-channel reconstruction) and ``xb_from_i = D_B(zi)`` (visual encoding).

    ``image_projection='linear'`` (default) is the paper's "one linear layer" after the frozen
    image encoder (Section 3.3.2, Appendix D.2). The public release instead feeds the frozen
    features straight in (``'identity'``); then ``embed_dim`` must equal ``feature_dim``.
    The decoder runs once on ``cat([zb, zi])`` so its BatchNorm statistics are the same mixture in
    training and evaluation (two separate calls would normalise each half by its own statistics
    in training, but by a blend of both at evaluation).

    Two options make the encoder cheap on many channels (docs/mua_encoder.md); the decoder always
    outputs all ``n_chans`` channels, and ``None`` for both builds today's encoder.
    ``spatial_projection=P``: a learned (P, n_chans) channel mixing in front of the encoder, which
    then runs on P virtual channels (:class:`.ProjectedEncoder`). ``temporal_filters`` (TSConv
    only): how many temporal filters run on every channel (:class:`.TSConvEncoder`).
    ``subject_layers=S`` (trained on S subjects): one (C, C) channel mixing per subject in front of
    the shared encoder (:class:`.SubjectEncoder`).
    """

    registry_name = "brainae"
    kind = "model"

    class Options(ModelOptions):
        """BrainAE's own options of the flat ``model:`` section."""

        backbone: str = "tsconv"
        spatial_projection: int | None = Field(None, description="a BrainAE option")
        temporal_filters: int | None = Field(
            None, description="an option of BrainAE's TSConv encoder")
        subject_layers: int | None = Field(None, description="a BrainAE option")

        @model_validator(mode="after")
        def _temporal_filters_need_tsconv(self) -> BrainAE.Options:
            if self.temporal_filters is not None and self.backbone != "tsconv":
                raise ValueError("temporal_filters is an option of BrainAE's TSConv encoder; a "
                                 f"BrainAE with backbone {self.backbone!r} has none (leave it "
                                 "unset)")
            return self

    traits = ModelTraits(loss="brainae", config_class=Options)

    def __init__(
        self,
        n_chans: int,
        n_times: int,
        feature_dim: int,
        embed_dim: int | None = None,
        image_projection: ImageProjection = "linear",
        backbone: str | nn.Module = "tsconv",
        k: int = 40,
        m1: int = 26,
        m2: int = 5,
        s: int = 5,
        dropout: float = 0.0,
        decoder_activation: DecoderActivation = "none",
        tau: float = 0.07,
        learn_tau: bool = False,
        sfreq: float | None = None,
        spatial_projection: int | None = None,
        temporal_filters: int | None = None,
        subject_layers: int | None = None,
    ) -> None:
        super().__init__()
        embed_dim = feature_dim if embed_dim is None else embed_dim
        if image_projection == "identity" and embed_dim != feature_dim:
            raise ValueError(
                f"image_projection='identity' needs embed_dim == feature_dim, got embed_dim="
                f"{embed_dim} and feature_dim={feature_dim} (use image_projection='linear')"
            )
        if image_projection not in ("linear", "identity"):
            raise ValueError(f"image_projection must be 'linear' or 'identity', got {image_projection!r}")
        self.n_chans, self.n_times = n_chans, n_times
        self.feature_dim, self.embed_dim = feature_dim, embed_dim
        self.image_projection_kind = image_projection
        if spatial_projection is not None:
            check_n_virtual(n_chans, spatial_projection)
        encoder_chans = n_chans if spatial_projection is None else spatial_projection
        if isinstance(backbone, nn.Module):
            encoder = backbone
        elif backbone == "tsconv":
            encoder = TSConvEncoder(
                encoder_chans, n_times, embed_dim, k=k, m1=m1, m2=m2, s=s, dropout=dropout,
                temporal_filters=temporal_filters,
            )
        else:
            from .registry import build_backbone

            encoder = build_backbone(
                backbone, n_chans=encoder_chans, n_times=n_times, embed_dim=embed_dim,
                dropout=dropout, sfreq=sfreq,
            )
        if subject_layers is not None and spatial_projection is not None:
            raise ValueError("subject_layers and spatial_projection are two input layers; a "
                             "BrainAE has one (an adapted subject's layer is its projection)")
        if subject_layers is not None:
            encoder = SubjectEncoder(subject_layers, n_chans, encoder)
        elif spatial_projection is not None:
            encoder = ProjectedEncoder(n_chans, spatial_projection, encoder)
        self.brain_encoder = encoder
        self.brain_decoder = TSConvDecoder(
            n_chans, n_times, embed_dim, k=k, m1=m1, m2=m2, s=s, activation=decoder_activation
        )
        self.image_projection = (
            nn.Linear(feature_dim, embed_dim) if image_projection == "linear" else nn.Identity()
        )
        self.temperature = Temperature(tau, learn=learn_tau)
        # Visual-encoding read-out (see predict_response). Identity until the trainer calibrates it.
        self.register_buffer("encoding_mean", torch.zeros(n_chans, n_times))
        self.register_buffer("encoding_center", torch.zeros(n_chans, n_times))
        self.register_buffer("encoding_gain", torch.ones(()))
        # Linear read-out of the shared space (zi - zi_center) -> response; zero until calibrated.
        self.register_buffer("encoding_linear", torch.zeros(embed_dim, n_chans, n_times))
        self.register_buffer("encoding_zi_center", torch.zeros(embed_dim))
        self._register_load_state_dict_pre_hook(self._uncalibrated_if_absent)

    def _uncalibrated_if_absent(self, state_dict, prefix, *_args) -> None:
        """Weights saved before (parts of) the encoding read-out existed load with those parts off."""
        defaults = {"encoding_mean": torch.zeros(self.n_chans, self.n_times),
                    "encoding_center": torch.zeros(self.n_chans, self.n_times),
                    "encoding_gain": torch.ones(()),
                    "encoding_linear": torch.zeros(self.embed_dim, self.n_chans, self.n_times),
                    "encoding_zi_center": torch.zeros(self.embed_dim)}
        for name, default in defaults.items():
            state_dict.setdefault(prefix + name, default)

    @classmethod
    def from_config(
        cls, model_cfg: ModelConfig, n_chans: int, n_times: int, feature_dim: int, **kwargs
    ) -> BrainAE:
        """Build from the ``model`` config section; ``kwargs`` (e.g. ``sfreq``) are passed on."""
        return cls(
            n_chans=n_chans,
            n_times=n_times,
            feature_dim=feature_dim,
            embed_dim=model_cfg.embed_dim,
            image_projection=model_cfg.image_projection,
            backbone=model_cfg.backbone,
            k=model_cfg.k,
            m1=model_cfg.m1,
            m2=model_cfg.m2,
            s=model_cfg.s,
            dropout=model_cfg.dropout,
            decoder_activation=model_cfg.decoder_activation,
            tau=model_cfg.tau,
            learn_tau=model_cfg.learn_tau,
            spatial_projection=model_cfg.spatial_projection,
            temporal_filters=model_cfg.temporal_filters,
            subject_layers=model_cfg.subject_layers,
            **kwargs,
        )

    @property
    def tau(self) -> Tensor:
        """Current InfoNCE temperature (a 0-d tensor; carries a gradient when learned)."""
        return self.temperature()

    def encode_brain(self, x: Tensor) -> Tensor:
        """(b, n_chans, n_times) -> zb (b, embed_dim)."""
        return self.brain_encoder(x)

    def encode_image(self, f: Tensor) -> Tensor:
        """Frozen image features (b, feature_dim) -> zi (b, embed_dim)."""
        if f.ndim != 2 or f.shape[1] != self.feature_dim:
            raise ValueError(f"expected image features (batch, {self.feature_dim}), got {tuple(f.shape)}")
        return self.image_projection(f)

    def decode(self, z: Tensor) -> Tensor:
        """Shared-space embedding (b, embed_dim) -> brain activity (b, n_chans, n_times)."""
        return self.brain_decoder(z)

    def predict_response(self, f: Tensor) -> Tensor:
        """Visual encoding: the brain response predicted for images with frozen features ``f``.

        ``encoding_mean + (zi - zi_center) . encoding_linear + encoding_gain * (D_B(zi) -
        encoding_center)`` with ``zi = P(f)``: a linear read-out of the shared space plus the
        decoder's output, re-centred and scaled; all set by
        :func:`neuralign.offline.train.calibrate_encoding` after training on training images only.
        Before calibration it is ``D_B(P(f))``.
        """
        zi = self.encode_image(f)
        raw = self.decode(zi)
        linear = torch.einsum("bd,dct->bct", zi - self.encoding_zi_center, self.encoding_linear)
        return self.encoding_mean + linear + self.encoding_gain * (raw - self.encoding_center)

    def reconstruct(self, x: Tensor) -> Tensor:
        """D_B(E_B(x)): fills masked channels/samples of ``x`` (BrainAE Section 4.6)."""
        return self.decode(self.encode_brain(x))

    def forward(self, x: Tensor, f: Tensor) -> dict[str, Tensor]:
        zb = self.encode_brain(x)
        zi = self.encode_image(f)
        xb_from_b, xb_from_i = self.decode(torch.cat([zb, zi])).split(zb.shape[0])
        return {"zb": zb, "zi": zi, "xb_from_b": xb_from_b, "xb_from_i": xb_from_i}
