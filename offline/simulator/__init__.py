"""The built-in THINGS-like simulator: images, EEG/MEG through an MNE forward model, MUA."""

from neuralign.offline.simulator.core import (
    SNR_DEFINITION,
    SessionSummary,
    SimulationResult,
    simulate,
)
from neuralign.offline.simulator.epoching import epoch_things_layout
from neuralign.offline.simulator.images import image_paths, render_image

__all__ = [
    "SNR_DEFINITION",
    "SessionSummary",
    "SimulationResult",
    "epoch_things_layout",
    "image_paths",
    "render_image",
    "simulate",
]
