"""The bundle contract: the typed Manifest round-trips, old format versions load, bad ones fail."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neuralign.bundle import (
    FORMAT_VERSION,
    MANIFEST,
    ChannelsSection,
    EpochSection,
    GeneratorSection,
    Manifest,
    ModelSection,
    NoiseNormalizationSection,
    TemplateBankSection,
    _content_hash,
    load_bundle,
    save_bundle,
)
from neuralign.config import ModelConfig, PreprocessingConfig
from neuralign.errors import DataError

N_CH = 3


def _manifest(**update) -> Manifest:
    return Manifest(
        channels=ChannelsSection(names=["O1", "Oz", "O2"], types=["eeg"] * N_CH),
        sfreq=250.0,
        modality="eeg",
        epoch=EpochSection(tmin=0.0, tmax=1.0, baseline=(-0.2, 0.0), n_times=250),
        preprocessing=PreprocessingConfig(notch_freqs=[50.0]),
        noise_normalization=NoiseNormalizationSection(method="mvnn", mode="epochs",
                                                      w=np.eye(N_CH).tolist(), mean=[0.0] * N_CH),
        model=ModelSection(config=ModelConfig(k=8), n_chans=N_CH, n_times=250, feature_dim=16),
        template_bank=TemplateBankSection(image_ids=["a", "b"], concepts=["x", "y"]),
        provenance="neuralign-causal",
        **update,
    )


def _save(path, manifest: Manifest):
    generator = {"g": torch.ones(3)} if manifest.generator is not None else None
    from neuralign.models import build_model

    m = manifest.model  # real weights: loading checks they are the model the manifest describes
    state = build_model(m.config, n_chans=m.n_chans, n_times=m.n_times,
                        feature_dim=m.feature_dim).state_dict()
    return save_bundle(path, manifest, state, np.ones((2, 4), np.float32),
                       np.zeros((2, 8, 8, 3), np.uint8), generator_state=generator)


def test_manifest_round_trip_is_typed_and_exact(tmp_path):
    written = _manifest(generator=GeneratorSection(kind="flig", config={"latent": 8}))
    b = load_bundle(_save(tmp_path / "b", written))
    m = b.manifest
    assert isinstance(m, Manifest) and m.format_version == FORMAT_VERSION
    assert isinstance(m.preprocessing, PreprocessingConfig) and m.preprocessing.notch_freqs == [50.0]
    assert isinstance(m.model.config, ModelConfig) and m.model.config.k == 8
    assert m.epoch.baseline == (-0.2, 0.0) and m.generator.kind == "flig"
    np.testing.assert_array_equal(m.noise_normalization.whitening().w, np.eye(N_CH))
    assert b.ch_names == ["O1", "Oz", "O2"] and b.template_ids == ["a", "b"]
    # everything but the fields save_bundle fills in is what was written
    skip = {"content_hash", "neuralign_version", "format_version", "format"}
    assert ({k: v for k, v in m.to_json_dict().items() if k not in skip}
            == {k: v for k, v in written.to_json_dict().items() if k not in skip})


def test_format_version_1_bundle_still_loads(tmp_path):
    """A bundle exported before the typed manifest: plain dict layout, version 1, no generator."""
    d = _save(tmp_path / "old", _manifest())
    raw = json.loads((d / MANIFEST).read_text())
    raw.pop("generator")
    raw["format_version"] = 1
    raw["neuralign_version"] = "0.1.0"
    raw["epoch"]["baseline"] = [-0.2, 0.0]  # as the dict-era exporter wrote it
    raw["content_hash"] = _content_hash(d, raw)
    (d / MANIFEST).write_text(json.dumps(raw))
    m = load_bundle(d).manifest
    assert m.format_version == 1 and m.generator is None and m.epoch.baseline == (-0.2, 0.0)


@pytest.mark.parametrize("edit, match", [
    (lambda r: r.update(format_version=FORMAT_VERSION + 1), "newer than this neuralign"),
    (lambda r: r.update(format="something-else"), "format: expected"),
    (lambda r: r["epoch"].pop("n_times"), "manifest key 'epoch.n_times'"),
    (lambda r: r["model"]["config"].update(k="many"), "manifest key 'model.config.k'"),
])
def test_bad_manifest_is_one_clear_error(tmp_path, edit, match):
    d = _save(tmp_path / "b", _manifest())
    raw = json.loads((d / MANIFEST).read_text())
    edit(raw)
    raw["content_hash"] = _content_hash(d, raw)
    (d / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(DataError, match=match):
        load_bundle(d)
