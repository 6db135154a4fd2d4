"""Torch modules and losses, and a registry from config name to class. No file I/O, no LSL.

The registry (:mod:`.registry`) imports every module of this package: a class with a
``registry_name``, a ``kind`` ("model", "backbone" or "generator") and its ``traits``
(:class:`ModelTraits`: loss, pixel input, generative, options class) becomes buildable by name
and valid as ``model.name``; adding a model is adding one file (exporting it here is optional).
"""

from .brainae import BrainAE, Temperature
from .braindecode_backbones import (
    BraindecodeBackbone,
    ConformerBackbone,
    DeepNetBackbone,
    EEGNetBackbone,
    ShallowNetBackbone,
    braindecode_available,
)
from .losses import brainae_loss, clip_loss, feature_mse, info_nce, reconstruction_mse
from .registry import (
    ModelOptions,
    ModelTraits,
    backbone_names,
    build_backbone,
    build_model,
    config_names,
    get_backbone_class,
    get_model_class,
    model_names,
    model_traits,
    register_model,
)
from .spatial_projection import ProjectedEncoder
from .tsconv import TSConvDecoder, TSConvEncoder, tsconv_n_pooled_times
from .vna import (
    VNA,
    ConvImageDecoder,
    ConvImageEncoder,
    DirectDecoding,
    DirectEncoding,
    MLPNeuralEncoder,
)

__all__ = [
    "BrainAE",
    "VNA",
    "DirectEncoding",
    "DirectDecoding",
    "TSConvEncoder",
    "TSConvDecoder",
    "ProjectedEncoder",
    "EEGNetBackbone",
    "ShallowNetBackbone",
    "DeepNetBackbone",
    "ConformerBackbone",
    "BraindecodeBackbone",
    "ConvImageEncoder",
    "ConvImageDecoder",
    "MLPNeuralEncoder",
    "Temperature",
    "braindecode_available",
    "tsconv_n_pooled_times",
    "info_nce",
    "feature_mse",
    "reconstruction_mse",
    "brainae_loss",
    "clip_loss",
    "build_model",
    "build_backbone",
    "get_model_class",
    "get_backbone_class",
    "model_names",
    "backbone_names",
    "config_names",
    "model_traits",
    "register_model",
    "ModelTraits",
    "ModelOptions",
]
