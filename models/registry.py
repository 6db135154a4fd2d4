"""Registry from config name to model class, built from what ``neuralign.models`` exports.

Every exported ``nn.Module`` subclass with a ``registry_name`` is registered under it, as a
``"model"`` (``BrainAE``, ``VNA``, baselines: built by :func:`build_model`) or a ``"backbone"``
(brain encoders ``(b, n_chans, n_times) -> (b, embed_dim)``, chosen by ``ModelConfig.backbone``).
"""

from __future__ import annotations

import importlib
import logging
from functools import cache
from typing import Any

from torch import nn

from neuralign.config import ModelConfig

log = logging.getLogger(__name__)

# Accepted spellings -> registry name (braindecode class names and BrainAE Table 5 names).
ALIASES = {
    "eegnetv4": "eegnet",
    "shallowfbcspnet": "shallownet",
    "shallow": "shallownet",
    "deep4net": "deepnet",
    "deep4": "deepnet",
    "eegconformer": "conformer",
}


@cache
def _registry() -> dict[str, dict[str, type[nn.Module]]]:
    package = importlib.import_module("neuralign.models")
    found: dict[str, dict[str, type[nn.Module]]] = {"model": {}, "backbone": {}}
    for attr in package.__all__:
        obj = getattr(package, attr)
        name = getattr(obj, "registry_name", "")
        if isinstance(obj, type) and issubclass(obj, nn.Module) and name:
            found[obj.kind][name] = obj
    return found


def model_names() -> list[str]:
    """Registered top-level models (``brainae``, ``vna``, ``direct_encoding``, ...)."""
    return sorted(_registry()["model"])


def backbone_names() -> list[str]:
    """Registered brain encoders (``tsconv`` and the braindecode ones, installed or not)."""
    return sorted(_registry()["backbone"])


def _lookup(kind: str, name: str) -> type[nn.Module]:
    key = name.lower()
    key = ALIASES.get(key, key)
    table = _registry()[kind]
    if key not in table:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted(table))}")
    return table[key]


def get_model_class(name: str) -> type[nn.Module]:
    return _lookup("model", name)


def get_backbone_class(name: str) -> type[nn.Module]:
    return _lookup("backbone", name)


def build_backbone(
    name: str, n_chans: int, n_times: int, embed_dim: int, **kwargs: Any
) -> nn.Module:
    """A brain encoder by name. ``None``-valued kwargs are dropped (e.g. an unknown ``sfreq``)."""
    cls = get_backbone_class(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if cls.registry_name == "tsconv":
        kwargs.pop("sfreq", None)
    return cls(n_chans=n_chans, n_times=n_times, embed_dim=embed_dim, **kwargs)


def build_model(
    model_cfg: ModelConfig, n_chans: int, n_times: int, feature_dim: int | None, **kwargs: Any
) -> nn.Module:
    """The model named by ``model_cfg.name``, via its ``from_config`` classmethod.

    ``kwargs`` carry what the config does not know (``sfreq`` for braindecode backbones,
    ``image_size`` for VNA).
    """
    cls = get_model_class(model_cfg.name)
    model = cls.from_config(model_cfg, n_chans=n_chans, n_times=n_times, feature_dim=feature_dim, **kwargs)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("built %s (%s) with %d trainable parameters", model_cfg.name, type(model).__name__, n_params)
    return model
