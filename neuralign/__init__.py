"""neuralign: real-time visual neural decoding.

Offline it trains models that align brain activity (EEG, MEG, spikes) with images in one latent
space; online it decodes live LSL / BrainFlow streams with the same causal preprocessing.
"""

from neuralign._version import __version__
from neuralign.lsl_config import ensure_local_lsl_config

__all__ = ["__version__", "ensure_local_lsl_config"]
