"""Build a generative decoder (FLIG, SMR + ICG, MAP with a denoiser prior) from its kind, config and data shape.

One builder for the two places a generator is rebuilt from saved weights: a generative run
directory (offline) and a bundle's ``generator`` section (:meth:`neuralign.bundle.Bundle.build_generator`),
so both give the same module for the same weights. No file I/O here.
"""

from __future__ import annotations

from torch import nn

from neuralign.generative_config import GenerativeConfig

GENERATOR_KINDS = ("flig", "smr_icg", "prior_map")


def build_generator(kind: str, gen: GenerativeConfig, n_units: int, image_size: int, channels: int,
                    state: dict | None = None) -> nn.Module:
    """The eval-mode model whose ``generate(responses (n, n_units))`` returns images in [0, 1]."""
    if kind == "flig":
        from neuralign.models.flig import FLIG

        f = gen.flig
        model = FLIG(n_units, image_size, channels, f.n_units_x, f.n_units_s, f.coupling_hidden,
                     f.coupling_layers, f.cae_dropout, f.cae_width, f.coupling_permute)
    elif kind == "smr_icg":
        from neuralign.models.icg import SmrIcgDecoder

        model = SmrIcgDecoder.from_state(gen, n_units, image_size, channels, state)
    elif kind == "prior_map":
        from neuralign.models.prior_map import PriorMapDecoder

        model = PriorMapDecoder(n_units, image_size, channels, gen.prior_map)
    else:
        raise ValueError(f"unknown generator kind {kind!r}; known: {', '.join(GENERATOR_KINDS)}")
    if state is not None:
        model.load_state_dict(state)
    return model.eval()
