"""Bad input (issue 11): each is one clear message (UserError; exit code 2 from the CLI, no
traceback), and nothing already recorded is lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from neuralign.bundle import load_bundle
from neuralign.config import RealtimeConfig
from neuralign.errors import UserError
from neuralign.realtime.engine import Engine
from neuralign.realtime.epocher import Epocher, EpochWindow
from neuralign.realtime.lsl_io import make_outlet
from neuralign.realtime.pipeline import Pipeline
from neuralign.realtime.ringbuffer import RingBuffer
from neuralign.realtime.sources.lsl import LSLSource
from tests.realtime.faults import Sender, tiny_raw


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neuralign", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ})


def _one_line_error(out: subprocess.CompletedProcess, *needles: str) -> None:
    assert out.returncode == 2, out.stdout[-1000:] + out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    for n in needles:
        assert n in out.stderr, out.stderr[-2000:]


@pytest.mark.parametrize("damage", ["truncated", "tampered", "newer"])
def test_bad_bundle_files_are_one_line_and_exit_2(tiny_bundle, tmp_path, damage):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle[0], bundle)
    if damage == "truncated":
        w = bundle / "weights.safetensors"
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
        needle = "content hash"
    elif damage == "tampered":
        m = json.loads((bundle / "manifest.json").read_text())
        m["sfreq"] = 251.0
        (bundle / "manifest.json").write_text(json.dumps(m))
        needle = "content hash"
    else:
        m = json.loads((bundle / "manifest.json").read_text())
        m["format_version"] = 99
        (bundle / "manifest.json").write_text(json.dumps(m))
        needle = "newer"
    out = _cli("run", "--bundle", str(bundle), "--source", "lsl:nothing-needed", "--headless",
               "--record", str(tmp_path / "rec"))
    _one_line_error(out, needle)
    assert not (tmp_path / "rec").exists()


def test_bad_filter_specs_are_one_user_error(tiny_bundle):
    """A cut-off at or above Nyquist and an unstable filter: one UserError, not a scipy
    ValueError or a filter that silently blows up."""
    bundle = load_bundle(tiny_bundle[0])
    pre = bundle.manifest.preprocessing  # model_copy: a hand-edited manifest, unvalidated
    bundle.manifest.preprocessing = pre.model_copy(update={"l_freq": 300.0, "h_freq": None})
    with pytest.raises(UserError, match="Nyquist"):
        Pipeline(bundle, bundle.ch_names, 500.0)
    bundle.manifest.preprocessing = pre.model_copy(update={"l_freq": 1e-7, "filter_order": 8})
    with pytest.raises(UserError, match="unstable"):
        Pipeline(bundle, bundle.ch_names, 5000.0)


def test_bad_epoch_window_longer_than_the_buffer(tiny_bundle):
    bundle = load_bundle(tiny_bundle[0])
    pipe = Pipeline(bundle, bundle.ch_names, 500.0, buffer_seconds=1.0)
    with pytest.raises(UserError, match="buffer_seconds"):
        Epocher(pipe.output, EpochWindow.for_signal(bundle.manifest.epoch, pipe.output),
                RingBuffer(63, 500))


def test_bad_channel_type_is_one_user_error(tiny_bundle):
    """Magnetometers where the EEG model expects EEG (count and names right)."""
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = tiny_raw(data_dir, 1.0)
    sender = Sender(raw.ch_names, 500.0, ch_type="mag", unit="teslas", markers=False)
    engine = Engine(bundle, LSLSource(source_id=sender.sid, timeout=10), RealtimeConfig(),
                    publish_lsl=False)
    try:
        with pytest.raises(UserError, match="channel type mismatch.*'mag'.*'eeg'"):
            engine.start()
    finally:
        engine.stop()


def test_bad_string_stream_where_numbers_are_expected_exits_2(tiny_bundle, tmp_path):
    name = f"strings-{uuid.uuid4().hex[:6]}"
    outlet = make_outlet(name, "EEG", ["a", "b"], 100.0, uuid.uuid4().hex, dtype="string")
    out = _cli("run", "--bundle", str(tiny_bundle[0]), "--source", f"lsl:{name}", "--headless",
               "--record", str(tmp_path / "rec"))
    del outlet
    _one_line_error(out, "carries strings")
    assert not (tmp_path / "rec" / "header.json").exists()


def test_bad_wrong_channel_count_keeps_the_recording_valid(tiny_bundle, tmp_path):
    """The stream opens, the recording starts, then the channel check refuses: exit 2 and the
    (empty) recording is closed complete, not left half-written."""
    bundle_dir, data_dir = tiny_bundle
    raw = tiny_raw(data_dir, 1.0)
    sender = Sender(raw.ch_names[:40], 500.0, markers=False)
    out = _cli("run", "--bundle", str(bundle_dir), "--source", f"lsl:source_id={sender.sid}",
               "--headless", "--record", str(tmp_path / "rec"))
    _one_line_error(out, "missing 23")
    header = json.loads((tmp_path / "rec" / "header.json").read_text())
    assert header["complete"] is True
