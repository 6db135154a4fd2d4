"""braindecode EEGNet / ShallowFBCSPNet / Deep4Net / EEGConformer as BrainAE brain encoders.

BrainAE Table 5 swaps TSConv for these. Each wrapper builds the braindecode network, drops its
classification ``final_layer`` (so no log-softmax, no class count) and puts a linear head from the
flattened features to ``embed_dim``. braindecode is optional (``pip install neuralign[braindecode]``);
it is imported only when one of these backbones is built. Works with braindecode 0.8 and 1.x
(EEGNet is ``EEGNetv4`` before 1.0).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install neuralign[braindecode]"


def braindecode_available() -> bool:
    """True when the optional ``braindecode`` package can be imported."""
    try:
        importlib.import_module("braindecode.models")
    except ImportError:
        return False
    return True


def _braindecode_class(candidates: tuple[str, ...], backbone: str) -> type[nn.Module]:
    try:
        bd_models = importlib.import_module("braindecode.models")
    except ImportError as exc:
        raise ImportError(
            f"backbone {backbone!r} needs the optional package 'braindecode', which is not "
            f"installed ({exc}); install it with: {INSTALL_HINT}"
        ) from exc
    for name in candidates:
        if hasattr(bd_models, name):
            return getattr(bd_models, name)
    raise ImportError(
        f"backbone {backbone!r}: the installed braindecode has none of {', '.join(candidates)}; "
        f"reinstall with: {INSTALL_HINT}"
    )


class BraindecodeBackbone(nn.Module):
    """A braindecode network without its classifier, plus dropout and Linear(n_features, embed_dim)."""

    registry_name: ClassVar[str] = ""
    kind: ClassVar[str] = "backbone"
    braindecode_names: ClassVar[tuple[str, ...]] = ()
    # Keyword defaults that make the network accept BrainAE-sized inputs (e.g. 63 x 250).
    braindecode_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        n_chans: int,
        n_times: int,
        embed_dim: int,
        dropout: float = 0.0,
        sfreq: float | None = None,
        **braindecode_kwargs: Any,
    ) -> None:
        super().__init__()
        cls = _braindecode_class(self.braindecode_names, self.registry_name)
        kwargs = {**self.braindecode_defaults, **braindecode_kwargs}
        if sfreq is not None:
            kwargs.setdefault("sfreq", sfreq)
        self.n_chans, self.n_times, self.embed_dim = n_chans, n_times, embed_dim
        try:
            net = cls(n_chans=n_chans, n_outputs=2, n_times=n_times, **kwargs)
        except (ValueError, RuntimeError) as exc:
            raise ValueError(
                f"backbone {self.registry_name!r} ({cls.__name__}) cannot take inputs of "
                f"{n_chans} channels x {n_times} samples: {exc}"
            ) from exc
        net.final_layer = nn.Identity()
        self.net = net
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.n_features = self._probe_features()
        self.head = nn.Linear(self.n_features, embed_dim)
        log.debug("%s: %d flattened features", self.registry_name, self.n_features)

    def _probe_features(self) -> int:
        was_training = self.net.training
        self.net.eval()
        try:
            with torch.no_grad():
                out = self.net(torch.zeros(2, self.n_chans, self.n_times))
        except RuntimeError as exc:
            raise ValueError(
                f"backbone {self.registry_name!r} cannot take inputs of {self.n_chans} channels "
                f"x {self.n_times} samples: {exc}"
            ) from exc
        finally:
            self.net.train(was_training)
        return int(out[0].numel())

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.flatten(self.net(x))))


class EEGNetBackbone(BraindecodeBackbone):
    """EEGNet-v4 (Lawhern et al. 2018) feature extractor."""

    registry_name = "eegnet"
    braindecode_names = ("EEGNet", "EEGNetv4")


class ShallowNetBackbone(BraindecodeBackbone):
    """ShallowFBCSPNet (Schirrmeister et al. 2017) feature extractor."""

    registry_name = "shallownet"
    braindecode_names = ("ShallowFBCSPNet",)


class DeepNetBackbone(BraindecodeBackbone):
    """Deep4Net (Schirrmeister et al. 2017) feature extractor.

    braindecode's default pooling (3, stride 3) needs ~440 samples; BrainAE's epochs are 200-250
    samples, so the pooling defaults to length 2, stride 2 (override with braindecode keywords).
    """

    registry_name = "deepnet"
    braindecode_names = ("Deep4Net",)
    braindecode_defaults: ClassVar[dict[str, Any]] = {"pool_time_length": 2, "pool_time_stride": 2}


class ConformerBackbone(BraindecodeBackbone):
    """EEGConformer (Song et al. 2023) feature extractor (NICE's and ATM's backbone family)."""

    registry_name = "conformer"
    braindecode_names = ("EEGConformer",)
    braindecode_defaults: ClassVar[dict[str, Any]] = {"final_fc_length": "auto"}


BRAINDECODE_BACKBONES: dict[str, type[BraindecodeBackbone]] = {
    cls.registry_name: cls
    for cls in (EEGNetBackbone, ShallowNetBackbone, DeepNetBackbone, ConformerBackbone)
}
