"""Registry from config name to model class, with each model's declared traits.

Every ``nn.Module`` subclass with a ``registry_name`` defined in a module of ``neuralign.models``
is registered under it (the package's modules are imported by :mod:`pkgutil`, so a new model is
one new file), or added with :func:`register_model` from anywhere else. Its ``kind`` says what it
is: a ``"model"`` (``BrainAE``, ``VNA``, baselines: built by :func:`build_model`), a
``"backbone"`` (brain encoders ``(b, n_chans, n_times) -> (b, embed_dim)``, chosen by
``ModelConfig.backbone``) or a ``"generator"`` (generative decoders, built by
:func:`neuralign.models.generators.build_generator`). Its ``traits`` (:class:`ModelTraits`) say
how the rest of the system treats it, so no code tests model names.

Light on purpose: no module-level import of :mod:`neuralign.config` (which validates
``model.name`` and the model's options through this module).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

if TYPE_CHECKING:
    from neuralign.config import ModelConfig

log = logging.getLogger(__name__)

#: the training objective (offline/train.py): ``brainae`` = BrainAE's (contrastive + feature +
#: reconstructions, gradient caching for large batches); ``clip`` = symmetric InfoNCE on
#: ``model(x, f)``; ``mse_encoding`` = MSE of ``model(f)`` against the response;
#: ``mse_decoding`` = MSE of ``model(x)`` against the image pixels; ``own`` = the model has its
#: own trainer (generative decoders, see :mod:`neuralign.models.generators`).
LossKind = Literal["brainae", "clip", "mse_encoding", "mse_decoding", "own"]


class ModelOptions(BaseModel):
    """The model-specific options of the flat ``model:`` section a model accepts (none here).

    A model declares its own subclass as ``ModelTraits.config_class``: the fields it lists (by
    their ``ModelConfig`` names) are validated by it, and a field that defaults to ``None`` is
    exclusive: a config setting it for a model whose class does not list it is refused, with the
    field's ``description`` ("a BrainAE option") in the error.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def of(cls, cfg: ModelConfig) -> ModelOptions:
        """This model's options read from the flat ``model:`` section (validated)."""
        return cls.model_validate({k: getattr(cfg, k) for k in cls.model_fields})


@dataclass(frozen=True)
class ModelTraits:
    """What the system needs to know about a model class, instead of testing its name."""

    #: the training objective (:data:`LossKind`)
    loss: LossKind = "clip"
    #: learns its image side from pixels (no frozen image features): offline/prepare.py
    pixel_input: bool = False
    #: a generative decoder (its own data, trainer and run directory: offline/generative)
    generative: bool = False
    #: the model-specific options it accepts (:class:`ModelOptions` subclass)
    config_class: type[ModelOptions] = ModelOptions


DEFAULT_TRAITS = ModelTraits()
KINDS = ("model", "backbone", "generator")
_extra: dict[str, dict[str, type[nn.Module]]] = {kind: {} for kind in KINDS}


def register_model(cls: type[nn.Module]) -> type[nn.Module]:
    """Register a class defined outside ``neuralign.models`` (a plugin, a test) under its
    ``registry_name``; usable as a class decorator."""
    name = getattr(cls, "registry_name", "")
    if not name or getattr(cls, "kind", "model") not in KINDS:
        raise ValueError(f"{cls.__name__}: a registered class needs a registry_name and a kind "
                         f"of {', '.join(KINDS)}")
    _extra[getattr(cls, "kind", "model")][name] = cls
    return cls


def unregister_model(name: str) -> None:
    """Forget a class added by :func:`register_model` (tests clean up with it)."""
    for table in _extra.values():
        table.pop(name, None)


def traits_of(cls: type) -> ModelTraits:
    """A class's declared traits (the defaults when it declares none)."""
    return getattr(cls, "traits", DEFAULT_TRAITS)


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
def _discovered() -> dict[str, dict[str, type[nn.Module]]]:
    """Every registered class of the package's own modules (imported once)."""
    package = importlib.import_module("neuralign.models")
    modules = [package] + [importlib.import_module(f"{package.__name__}.{info.name}")
                           for info in pkgutil.iter_modules(package.__path__)]
    found: dict[str, dict[str, type[nn.Module]]] = {kind: {} for kind in KINDS}
    for module in modules:
        for obj in vars(module).values():
            name = getattr(obj, "registry_name", "")
            if (isinstance(obj, type) and issubclass(obj, nn.Module) and name
                    and obj.__module__ == module.__name__):
                found[getattr(obj, "kind", "model")][name] = obj
    return found


def _registry() -> dict[str, dict[str, type[nn.Module]]]:
    found = _discovered()
    return {kind: {**found[kind], **_extra[kind]} for kind in KINDS}


def registered(kind: str) -> dict[str, type[nn.Module]]:
    """``name -> class`` of one kind (``model``, ``backbone`` or ``generator``)."""
    return _registry()[kind]


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


def config_names() -> list[str]:
    """Every valid ``model.name``: the models and the generative decoders."""
    reg = _registry()
    return sorted({*reg["model"], *reg["generator"]})


def config_class(name: str) -> type[nn.Module]:
    """The class a ``model.name`` stands for (a model or a generative decoder)."""
    reg = _registry()
    table = {**reg["model"], **reg["generator"]}
    key = ALIASES.get(name.lower(), name.lower())
    if key not in table:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(table))}")
    return table[key]


def model_traits(name: str) -> ModelTraits:
    """The declared traits of ``model.name`` (ValueError naming the known ones if unknown)."""
    return traits_of(config_class(name))


def exclusive_options() -> dict[str, tuple[str, set[str]]]:
    """``field -> (what it is, the models accepting it)`` for the options some models only
    accept (fields defaulting to None in a model's :class:`ModelOptions`)."""
    out: dict[str, tuple[str, set[str]]] = {}
    for name in config_names():
        for field, info in model_traits(name).config_class.model_fields.items():
            if info.default is None:
                what = out.get(field, (info.description or "an option of other models", set()))
                out[field] = (what[0], what[1] | {name})
    return out


def check_model_config(cfg: ModelConfig) -> None:
    """ValueError unless ``cfg.name`` is registered and its set options are the model's own."""
    traits = model_traits(cfg.name)
    for field, (what, _) in exclusive_options().items():
        if getattr(cfg, field, None) is not None and field not in traits.config_class.model_fields:
            raise ValueError(f"{field} is {what}; model {cfg.name!r} has none (leave it unset)")
    try:
        traits.config_class.of(cfg)
    except ValidationError as exc:  # its own checks, as one plain message
        raise ValueError("; ".join(e["msg"].removeprefix("Value error, ")
                                   for e in exc.errors())) from None


def build_backbone(
    name: str, n_chans: int, n_times: int, embed_dim: int, **kwargs: Any
) -> nn.Module:
    """A brain encoder by name. ``None``-valued kwargs are dropped (e.g. an unknown ``sfreq``)."""
    cls = get_backbone_class(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if "sfreq" not in inspect.signature(cls.__init__).parameters:  # e.g. TSConv: no sfreq
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
    model = cls.from_config(model_cfg, n_chans=n_chans, n_times=n_times, feature_dim=feature_dim,
                            **kwargs)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("built %s (%s) with %d trainable parameters", model_cfg.name, type(model).__name__,
             n_params)
    return model
