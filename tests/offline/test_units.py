"""SI units end to end, offline side: every reader returns volts, the bundle records its scale.

The defect: a block recorded by LabRecorder in microvolts trained a bundle whose whitening was
1e6 off the engine's volts, and live decoding was at chance without a word.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from neuralign.errors import ConfigError, DataError
from neuralign.offline.loaders.recording import read_continuous
from neuralign.offline.loaders.xdf import read_xdf
from neuralign.units import channel_scales, implausible_unit, unit_scale

from .xdf_writer import XdfStream, write_xdf

SFREQ = 500.0
CHANNELS = ["Fz", "Cz", "Pz", "O1", "Oz", "O2"]
N = 5000


@pytest.fixture(scope="module")
def volts() -> np.ndarray:
    """EEG-like volts (drift + 5 uV noise), float32-exact."""
    rng = np.random.default_rng(11)
    x = np.cumsum(rng.standard_normal((len(CHANNELS), N)), axis=1) * 2e-7
    x += rng.standard_normal(x.shape) * 5e-6
    return x.astype(np.float32).astype(np.float64)


def _xdf(path: Path, data: np.ndarray, unit: str | None) -> Path:
    """One EEG stream whose channels declare ``unit`` (None: no unit element's text) + markers."""
    ts = 100.0 + np.arange(N) / SFREQ
    chans = [(c, "EEG", unit or "") for c in CHANNELS]
    m_ts = ts[[1000, 2000, 3000]]
    return write_xdf(path, [
        XdfStream("Amp", "EEG", SFREQ, "float32", ts, data=data.T.astype(np.float32),
                  channels=chans),
        XdfStream("Markers", "Markers", 0.0, "string", m_ts, labels=["a", "b", "c"]),
    ])


def test_xdf_in_microvolts_reads_as_the_volts_file(tmp_path, volts, caplog):
    v = read_xdf(_xdf(tmp_path / "v.xdf", volts, "volts"))
    assert v[2] == CHANNELS and v[4] == [(1000, "a"), (2000, "b"), (3000, "c")]
    np.testing.assert_array_equal(v[0], volts)
    for i, unit in enumerate(("microvolts", "uV", "\u00b5V", "-6")):
        uv = read_xdf(_xdf(tmp_path / f"uv{i}.xdf", volts * 1e6, unit))
        np.testing.assert_allclose(uv[0], volts, rtol=1e-6, atol=0)
        assert uv[4] == v[4]
    # no unit at all: kept as stored, with one warning naming the likely unit and the fix
    bare = tmp_path / "bare.xdf"
    _xdf(bare, volts * 1e6, None)
    with caplog.at_level(logging.WARNING):
        block = read_continuous(bare)
    np.testing.assert_allclose(block.data, volts * 1e6, rtol=1e-6)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
              and r.name.startswith("neuralign")]
    assert len(warned) == 1 and "microvolts" in warned[0] and "dataset.recording.units: uV" \
        in warned[0] and "bare.xdf" in warned[0]
    # ... and declared by the config key it reads as volts, silently
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        block = read_continuous(bare, units="uV")
    np.testing.assert_allclose(block.data, volts, rtol=1e-6, atol=0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING
                and r.name.startswith("neuralign")]
    # a volts file raises no warning
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        read_continuous(tmp_path / "v.xdf")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING
                and r.name.startswith("neuralign")]


def test_xdf_unknown_unit_is_one_data_error(tmp_path, volts):
    path = _xdf(tmp_path / "odd.xdf", volts, "furlongs")
    with pytest.raises(DataError) as err:
        read_xdf(path)
    msg = str(err.value)
    for part in ("odd.xdf", "stream 'Amp'", "Fz ('furlongs')", "dataset.recording.units"):
        assert part in msg, msg
    np.testing.assert_allclose(read_xdf(path, units="uV")[0], volts * 1e-6, rtol=1e-6)


def test_config_units_key_is_validated():
    from neuralign.config import config_from_dict

    cfg = config_from_dict({"dataset": {"kind": "recording", "recording": {"units": "uV"}}}, "c")
    assert cfg.dataset.recording.units == "uV"
    with pytest.raises(ConfigError, match="dataset.recording.units: unknown unit 'parsecs'"):
        config_from_dict({"dataset": {"kind": "recording", "recording": {"units": "parsecs"}}},
                         "c")


def test_unit_table():
    assert unit_scale("Microvolts") == 1e-6 and unit_scale("fT/cm") == 1e-13
    assert unit_scale("-6") == 1e-6 and unit_scale("") == 1.0 and unit_scale("furlong") is None
    # an accelerometer's 'g' on a misc channel is kept; on an EEG channel it is an error
    f = channel_scales(["a", "b"], ["eeg", "misc"], ["uV", "g"], None, "s")
    np.testing.assert_array_equal(f, [1e-6, 1.0])
    with pytest.raises(Exception, match="unknown channel unit for a"):
        channel_scales(["a"], ["eeg"], ["g"], None, "s")
    rng = np.random.default_rng(0)
    eeg = rng.standard_normal((4, 1000)) * 1e-5
    assert implausible_unit(eeg, ["eeg"] * 4) is None
    assert "microvolts" in implausible_unit(eeg * 1e6, ["eeg"] * 4)
    assert implausible_unit(eeg * 1e6, ["misc"] * 4) is None  # MUA: arbitrary units


def test_mne_formats_are_volts(tmp_path, volts):
    """MNE converts each file's own unit (BrainVision stores microvolts) to volts."""
    import mne

    raw = mne.io.RawArray(volts, mne.create_info(CHANNELS, SFREQ, "eeg"), verbose="error")
    mne.export.export_raw(tmp_path / "b.vhdr", raw, fmt="brainvision", verbose="error")
    block = read_continuous(tmp_path / "b.vhdr")
    np.testing.assert_allclose(block.data, volts, rtol=0, atol=1e-5 * np.abs(volts).max())
    # a file whose values are really microvolts (declared volts): the config key rescales
    bad = mne.io.RawArray(volts * 1e6, raw.info, verbose="error")
    bad.save(tmp_path / "uv_raw.fif", verbose="error")
    np.testing.assert_allclose(read_continuous(tmp_path / "uv_raw.fif", units="uV").data, volts,
                               rtol=1e-6)


def test_recording_header_units_and_old_headers(tmp_path, volts):
    """The header says what the samples are stored in; old headers (no field) are volts."""
    from neuralign.realtime.recorder import Recorder, read_recording

    with Recorder(tmp_path / "rec", CHANNELS, ["eeg"] * len(CHANNELS), SFREQ, export_fif=False,
                  stream_units=["microvolts"] * len(CHANNELS),
                  stream_scales=[1e-6] * len(CHANNELS)) as rec:
        rec.write_samples(volts, 10.0 + np.arange(N) / SFREQ)
    hpath = tmp_path / "rec" / "header.json"
    header = json.loads(hpath.read_text())
    assert header["units"] == ["V"] * len(CHANNELS)
    assert header["stream_units"] == ["microvolts"] * len(CHANNELS)
    assert header["stream_scales"] == [1e-6] * len(CHANNELS)
    np.testing.assert_array_equal(read_recording(tmp_path / "rec")[0], volts.astype(np.float32))
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "rec", old)
    h = json.loads((old / "header.json").read_text())
    for k in ("units", "stream_units", "stream_scales"):
        del h[k]
    (old / "header.json").write_text(json.dumps(h))
    np.testing.assert_array_equal(read_continuous(old).data, volts.astype(np.float32))
    # a header storing microvolts reads as volts; the config key overrides a wrong header
    h["units"] = ["uV"] * len(CHANNELS)
    (old / "header.json").write_text(json.dumps(h))
    np.testing.assert_allclose(read_recording(old)[0], volts * 1e-6, rtol=1e-6)
    np.testing.assert_allclose(read_continuous(old, units="V").data, volts, rtol=1e-6)
    h["units"] = ["furlongs"] * len(CHANNELS)
    (old / "header.json").write_text(json.dumps(h))
    with pytest.raises(DataError, match="header 'units'.*furlongs"):
        read_recording(old)


def test_bundle_records_its_unit_and_scales(tiny_bundle, tmp_path):
    import mne

    from neuralign.bundle import MANIFEST, _content_hash, load_bundle
    from neuralign.signal.chain import CausalChain, ChainSpec

    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    sc = bundle.manifest.scale
    assert sc is not None and sc.units == {"eeg": "V"}
    assert 0.3 < sc.whitened_rms < 3.0  # MVNN: noise standard deviations
    # the filtered, un-whitened amplitude is the simulated EEG's, in volts: check it against
    # the test session run through the bundle's own chain (same subject and noise model)
    raw = mne.io.read_raw_fif(data_dir / "sim_test_raw.fif", preload=True, verbose="error")
    spec = ChainSpec.from_preprocessing(bundle.manifest.preprocessing, raw.info["sfreq"],
                                        bundle.ch_names)
    y = CausalChain(spec).process(raw.get_data(picks=bundle.ch_names))
    n = bundle.manifest.epoch.n_times
    k = y.shape[1] // n
    live = np.median(np.median(y[:, : k * n].reshape(len(y), k, n).std(axis=2), axis=1))
    assert 1 / 3 < sc.filtered_std["eeg"] / live < 3, (sc.filtered_std, live)
    # a bundle exported before the section existed still loads, without it
    old = tmp_path / "old_bundle"
    shutil.copytree(bundle_dir, old)
    m = json.loads((old / MANIFEST).read_text())
    del m["scale"]
    m["content_hash"] = _content_hash(old, m)
    (old / MANIFEST).write_text(json.dumps(m))
    assert load_bundle(old).manifest.scale is None
