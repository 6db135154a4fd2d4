"""Extension points are registries: a source kind, a model or a generator is ONE new file.

Each test writes that one file into a temporary folder added to the package's search path (so
the registry's own discovery finds it, exactly as a file dropped into the package would be
found) and shows the system picks it up through its real code paths: the CLI's help and errors,
config validation, ``open_source``, ``train_model``, ``neuralign train`` / ``evaluate``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from neuralign.errors import ConfigError, UserError

TOY_SOURCE = '''
"""``--source npy:PATH``: a (channels, samples) numpy array, delivered at once (a toy kind)."""

from __future__ import annotations

from pathlib import Path

from neuralign.errors import UserError
from neuralign.realtime.sources.registry import register_source


@register_source("npy", usage="npy:PATH", grammar="npy:PATH[:SFREQ]",
                 markers="none with npy: (a sliding window)")
def build_npy(rest, markers, rt, speed):
    import numpy as np

    from neuralign.realtime.sources.base import Source, StreamDescription

    path, _, sfreq = rest.partition(":")
    if not Path(path).is_file():
        raise UserError(f"--source: {path}: file not found")

    class NpySource(Source):
        def _connect(self):
            self.data = np.load(path).astype(np.float32)
            self.sent = False
            n = len(self.data)
            return StreamDescription("npy", "EEG", float(sfreq or 100.0),
                                     [f"C{i}" for i in range(n)], ["eeg"] * n)

        def _acquire_once(self):
            if not self.sent:
                stamps = np.arange(self.data.shape[1]) / self.description.sfreq
                self._write(self.data, stamps)
                self.sent = True

    return NpySource(buffer_seconds=rt.buffer_seconds)
'''

TOY_MODEL = '''
"""A toy retrieval model: one linear map per side, the CLIP objective."""

from __future__ import annotations

from torch import nn

from neuralign.models.registry import ModelTraits


class ToyLinear(nn.Module):
    registry_name = "toy_linear"
    kind = "model"
    traits = ModelTraits(loss="clip")

    def __init__(self, n_chans, n_times, feature_dim, embed_dim, tau):
        super().__init__()
        self.brain = nn.Linear(n_chans * n_times, embed_dim)
        self.image = nn.Linear(feature_dim, embed_dim)
        self.tau = tau

    @classmethod
    def from_config(cls, cfg, n_chans, n_times, feature_dim=None, **kwargs):
        return cls(n_chans, n_times, feature_dim, cfg.embed_dim or 16, cfg.tau)

    def encode_brain(self, x):
        return self.brain(x.flatten(1))

    def encode_image(self, f):
        return self.image(f)

    def forward(self, x, f):
        return {"zb": self.encode_brain(x), "zi": self.encode_image(f)}
'''

TOY_GENERATOR = '''
"""A toy generative decoder: always the mean training image; its own trainer and ablation."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from neuralign.models.generators import GeneratorKind
from neuralign.models.registry import ModelTraits


class MeanImage(nn.Module):
    registry_name = "toy_mean"
    kind = "generator"
    traits = ModelTraits(loss="own", generative=True)
    generator = GeneratorKind(trainer="neuralign.models.toy_mean:train",
                              ablation="neuralign.models.toy_mean:ablation")

    def __init__(self, image_size, channels):
        super().__init__()
        shape = (image_size, image_size) + ((channels,) if channels > 1 else ())
        self.register_buffer("mean", torch.zeros(shape))

    @classmethod
    def from_generative(cls, gen, n_units, image_size, channels, state=None):
        return cls(image_size, channels)

    def generate(self, responses):
        return np.repeat(self.mean.numpy()[None], len(responses), axis=0).astype(np.float32)


def train(config, paired, device):
    channels = 1 if paired.train_images.ndim == 3 else paired.train_images.shape[3]
    model = MeanImage(paired.train_images.shape[1], channels)
    model.mean.copy_(torch.from_numpy(paired.train_images.mean(0).astype(np.float32)))
    return model, {"toy_trained_on": len(paired.train_images)}


def ablation(model, paired, out):
    out.report["baselines"]["toy_half_mean"] = {"n_images": len(paired.test_images)}
    out.rows.append(model.generate(paired.test_responses) / 2)
    out.labels.append("half mean")
'''


def _plug_in(monkeypatch, package: str, folder: Path, name: str, source: str) -> None:
    """Write ``name.py`` into ``folder`` and put ``folder`` on ``package``'s search path."""
    import importlib

    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    pkg = importlib.import_module(package)
    monkeypatch.setattr(pkg, "__path__", [*pkg.__path__, str(folder)])
    monkeypatch.delitem(sys.modules, f"{package}.{name}", raising=False)


@pytest.fixture
def toy_source(monkeypatch, tmp_path):
    from neuralign.realtime.sources import registry

    _plug_in(monkeypatch, "neuralign.realtime.sources", tmp_path, "kind_npy", TOY_SOURCE)
    monkeypatch.setattr(registry, "_discovered", False)
    yield
    registry.unregister_source("npy")


@pytest.fixture
def plugged_models(monkeypatch, tmp_path):
    """A function writing a model file into the models package (the registry rediscovers)."""
    from neuralign.models import registry

    def plug(name: str, source: str) -> None:
        _plug_in(monkeypatch, "neuralign.models", tmp_path, name, source)
        registry._discovered.cache_clear()

    yield plug
    monkeypatch.undo()
    registry._discovered.cache_clear()


# ---------------------------------------------------------------------------------------------
# Sources


def test_shipped_source_kinds_register_without_importing_their_transports():
    code = ("import sys; from neuralign.realtime.sources.registry import source_kinds; "
            "print(list(source_kinds())); "
            "print(sorted(m for m in ('pylsl', 'brainflow', 'mne', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["['lsl', 'brainflow', 'file']", "[]"]


def test_a_new_source_file_is_in_the_help_the_errors_and_open_source(toy_source, tmp_path,
                                                                     capsys):
    from neuralign.cli.parser import build_parser
    from neuralign.config import RealtimeConfig
    from neuralign.realtime.sources.factory import open_source

    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "| file:PATH | npy:PATH[:SFREQ] (realtime.source;" in help_text
    assert "or none with npy: (a sliding window); without markers" in help_text

    rt = RealtimeConfig(marker_max_lag_s=0.5)
    with pytest.raises(UserError, match=r"--source: expected lsl:NAME, brainflow:BOARD, "
                       r"file:PATH or npy:PATH, got 'nope:x'"):
        open_source("nope:x", None, rt)
    with pytest.raises(UserError, match="npy: file not found|file not found"):
        open_source(f"npy:{tmp_path / 'missing.npy'}", None, rt)

    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "x.npy", data)
    src = open_source(f"npy:{tmp_path / 'x.npy'}:50", None, rt)
    assert src.marker_clock.max_lag_s == 0.5  # the factory's clock settings applied to it too
    desc = src.open()
    src._acquire_once()
    assert (desc.sfreq, desc.ch_names) == (50.0, ["C0", "C1", "C2"])
    assert src.buffer.n_written == 4


def test_shipped_source_errors_keep_their_wording():
    from neuralign.config import RealtimeConfig
    from neuralign.realtime.sources.factory import open_source

    rt = RealtimeConfig()
    with pytest.raises(UserError, match=r"^--source: expected lsl:NAME, brainflow:BOARD or "
                       r"file:PATH, got 'x'$"):
        open_source("x", None, rt)
    with pytest.raises(UserError, match="--markers: a BrainFlow source takes its markers"):
        open_source("brainflow:synthetic", "lsl:stim", rt)
    with pytest.raises(UserError, match="--source: expected lsl:NAME or lsl:key=value"):
        open_source("lsl:bogus=1", None, rt)
    with pytest.raises(UserError, match="--source: nowhere.fif: file not found"):
        open_source("file:nowhere.fif", None, rt)


# ---------------------------------------------------------------------------------------------
# Models


def test_shipped_models_declare_their_traits():
    from neuralign.models.registry import config_names, model_traits

    assert config_names() == ["brainae", "direct_decoding", "direct_encoding", "flig",
                              "prior_map", "smr_icg", "vna"]
    assert [model_traits(n).loss for n in ("brainae", "vna", "direct_encoding",
                                           "direct_decoding")] == [
        "brainae", "clip", "mse_encoding", "mse_decoding"]
    assert {n for n in config_names() if model_traits(n).pixel_input} == {
        "vna", "direct_encoding", "direct_decoding"}
    assert {n for n in config_names() if model_traits(n).generative} == {
        "flig", "smr_icg", "prior_map"}


def test_model_names_are_validated_against_the_registry():
    from neuralign.config import config_from_dict

    with pytest.raises(ConfigError, match="model.name: unknown model 'toy_linear'; known: brainae"):
        config_from_dict({"dataset": {"kind": "tvsd"}, "model": {"name": "toy_linear"}})
    cfg = config_from_dict({"dataset": {"kind": "tvsd"}, "model": {"name": "prior_map"}})
    assert cfg.generative is not None  # a generative model gets the generative section


def test_a_new_model_file_is_validated_built_and_trained(plugged_models, tiny_sim, tmp_path):
    from neuralign.config import config_from_dict, dump_config, load_config
    from neuralign.offline.prepare import prepare
    from neuralign.offline.train import train_model
    from tests.conftest import FAST_TRAIN, TINY_SIM

    plugged_models("toy_linear", TOY_MODEL)
    tree = dump_config(load_config("demo", [f"dataset.simulation.{k}={v}"
                                            for k, v in TINY_SIM.items()] + FAST_TRAIN))
    tree["model"] = {"name": "toy_linear", "embed_dim": 8}
    cfg = config_from_dict(tree)
    assert cfg.model.traits.loss == "clip" and not cfg.model.traits.pixel_input
    with pytest.raises(ConfigError, match="spatial_projection is a BrainAE option; model "
                       "'toy_linear' has none"):
        config_from_dict({**tree, "model": {"name": "toy_linear", "spatial_projection": 4}})

    prep = prepare(cfg, tiny_sim[2])
    hist = train_model(cfg, prep, tmp_path / "run", progress=False)
    assert len(hist["history"]) == cfg.training.epochs and np.isfinite(hist["best_val_loss"])
    assert hist["micro_batch_size"] is None  # gradient caching is BrainAE's loss only
    assert (tmp_path / "run" / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------------------
# Generators


def test_a_new_generator_file_trains_evaluates_and_rebuilds(plugged_models, tmp_path, capsys):
    from neuralign.cli import main
    from neuralign.generative_config import GenerativeConfig
    from neuralign.models.generators import build_generator, generator_names
    from neuralign.offline.generative.runs import is_generative_run

    plugged_models("toy_mean", TOY_GENERATOR)
    assert generator_names() == ["flig", "prior_map", "smr_icg", "toy_mean"]
    model = build_generator("toy_mean", GenerativeConfig(), 5, 8, 1)
    assert model.generate(np.zeros((2, 5))).shape == (2, 8, 8) and not model.training

    tiny = ["dataset.simulation.retina.n_cells=8", "dataset.simulation.retina.n_images=40",
            "dataset.simulation.retina.n_extra_images=0",
            "dataset.simulation.retina.test_fraction=0.25", "generative.image_size=16",
            "training.device=cpu", "training.num_threads=1"]
    sets = [a for s in tiny for a in ("--set", s)]
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["simulate", "--config", "flig", "--out", str(data), *sets]) == 0
    assert main(["train", "--config", "flig", "--data", str(data / "paired.npz"), "--out",
                 str(run), "--set", "model.name=toy_mean", *sets]) == 0
    assert is_generative_run(run)
    assert json.loads((run / "history.json").read_text())["toy_trained_on"] == 30
    assert main(["evaluate", "--run", str(run)]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["model"] == "toy_mean"
    assert {"ridge_pixel", "toy_half_mean"} <= set(report["baselines"])  # its ablation ran
    capsys.readouterr()


def test_bench_decoders_scored_from_runs_are_registered_generators():
    from neuralign.models.generators import generator_kind, generator_names
    from neuralign.offline.generative.bench import SLOW

    assert set(SLOW) <= set(generator_names())
    for kind in generator_names():  # every declared entry point resolves
        spec = generator_kind(kind)
        assert callable(spec.entry("trainer")) and callable(spec.entry("ablation"))


def test_a_model_class_defined_elsewhere_registers_with_a_decorator():
    from torch import nn

    from neuralign.config import config_from_dict
    from neuralign.models.registry import (
        ModelTraits,
        config_names,
        model_traits,
        register_model,
        unregister_model,
    )

    @register_model
    class Plugin(nn.Module):
        registry_name = "plugin_decoder"
        kind = "model"
        traits = ModelTraits(loss="mse_decoding", pixel_input=True)

    try:
        assert "plugin_decoder" in config_names()
        assert model_traits("plugin_decoder").loss == "mse_decoding"
        cfg = config_from_dict({"dataset": {"kind": "tvsd"}, "model": {"name": "plugin_decoder"}})
        assert cfg.model.traits.pixel_input
    finally:
        unregister_model("plugin_decoder")
    assert "plugin_decoder" not in config_names()
