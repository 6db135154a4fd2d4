"""Config schema: shipped configs validate, overrides apply, every bad input is one clear error."""

import pytest

from neuralign.config import load_config, shipped_config_names, shipped_config_path
from neuralign.errors import ConfigError


def test_every_shipped_config_validates():
    names = shipped_config_names()
    assert {"demo", "things_eeg2", "things_meg", "tvsd", "allen_natural_scenes"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.name == name


def test_things_eeg2_has_the_papers_settings():
    cfg = load_config("things_eeg2")
    pre, model, tr = cfg.preprocessing, cfg.model, cfg.training
    assert (pre.tmin, pre.tmax, pre.l_freq, pre.h_freq) == (0.0, 1.0, 0.1, 100.0)
    assert pre.baseline == (-0.2, 0.0) and pre.resample_sfreq == 250.0
    assert pre.noise_normalization.method == "mvnn"
    assert (model.k, model.m1, model.m2, model.s, model.tau) == (40, 26, 5, 5, 0.07)
    assert (tr.lr, tr.betas, tr.batch_size, tr.epochs, tr.n_val_trials) == (
        1e-3, (0.5, 0.999), 800, 50, 740)


def test_overrides_are_typed():
    cfg = load_config("demo", ["training.epochs=5", "preprocessing.notch_freqs=[50, 100]"])
    assert cfg.training.epochs == 5
    assert cfg.preprocessing.notch_freqs == [50.0, 100.0]


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("dataset: {kind: simulated}\ntraining: {epochz: 3}\n", "training.epochz", "unknown key"),
        ("dataset: {kind: simulated}\ntraining: {epochs: many}\n", "training.epochs", "integer"),
        ("dataset: {kind: simulated}\ntraining: {epochs: 0}\n", "training.epochs", "greater than"),
        ("dataset: {kind: eeg_from_mars}\n", "dataset.kind", "simulated"),
        ("training: {epochs: 3}\n", "dataset", "missing"),
        ("dataset: [1, 2\n", "line", "invalid YAML"),
    ],
)
def test_bad_config_names_file_key_and_expectation(tmp_path, text, key, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg and key in msg and expected in msg
    assert "\n" not in msg


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.yaml")


def test_shipped_path_is_package_data():
    assert shipped_config_path("demo").is_file()
