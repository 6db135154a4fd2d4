"""Generative decoder kinds (FLIG, SMR + ICG, MAP with a denoiser prior): one registry.

A kind is a class of ``neuralign.models`` (any module: the registry imports them all) with
``registry_name``, ``kind = "generator"``, ``traits = ModelTraits(loss="own", generative=True)``,
a classmethod ``from_generative(gen, n_units, image_size, channels, state)`` (the builder) and
``generator = GeneratorKind(...)`` naming its trainer and its ablation; so a new generator is one
new file, and ``neuralign train`` / ``evaluate`` / bundles pick it up by ``model.name``.

One builder for the two places a generator is rebuilt from saved weights: a generative run
directory (offline) and a bundle's ``generator`` section
(:meth:`neuralign.bundle.Bundle.build_generator`), so both give the same module for the same
weights. No file I/O here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from neuralign.generative_config import GenerativeConfig

from .registry import registered


@dataclass(frozen=True)
class GeneratorKind:
    """How the offline code trains and evaluates one kind of generative decoder.

    Entry points are ``"module:function"`` strings, imported when used, so declaring them costs
    nothing and this package never imports the training code.
    """

    #: ``(config: Config, paired: PairedData, device) -> (model, history dict)``: trains the
    #: decoder on paired data (``neuralign train``); the history lands in ``history.json``
    trainer: str
    #: ``(model, paired: PairedData, report: GenerativeReport) -> None``: the kind's own
    #: numbers and ablations/baselines added to ``neuralign evaluate``'s report ('' = none)
    ablation: str = ""

    def entry(self, which: str) -> Callable[..., Any] | None:
        """The ``trainer`` or ``ablation`` function (None when the kind declares none)."""
        spec = getattr(self, which)
        if not spec:
            return None
        module, _, attr = spec.partition(":")
        return getattr(importlib.import_module(module), attr)


def generator_names() -> list[str]:
    """Every registered generator kind (valid ``model.name`` of a generative run)."""
    return sorted(registered("generator"))


def generator_class(kind: str) -> type[nn.Module]:
    """The class of a generator kind (ValueError naming the known kinds if unknown)."""
    table = registered("generator")
    if kind not in table:
        raise ValueError(f"unknown generator kind {kind!r}; known: {', '.join(sorted(table))}")
    return table[kind]


def generator_kind(kind: str) -> GeneratorKind:
    """The trainer and ablation a generator kind declares."""
    return generator_class(kind).generator


def build_generator(kind: str, gen: GenerativeConfig, n_units: int, image_size: int, channels: int,
                    state: dict | None = None) -> nn.Module:
    """The eval-mode model whose ``generate(responses (n, n_units))`` returns images in [0, 1]."""
    model = generator_class(kind).from_generative(gen, n_units, image_size, channels, state)
    if state is not None:
        model.load_state_dict(state)
    return model.eval()
