"""
Replay a recording over LSL and read it back
============================================

:class:`~neuralign.realtime.replay.LSLReplayer` sends a recording as an LSL data stream plus a
string ``Markers`` stream (one marker per stimulus, its value the image id), as an amplifier
and a stimulus PC would. The engine's own :class:`~neuralign.realtime.sources.lsl.LSLSource`
reads it into its ring buffer, exactly as it reads a headset. Here a simulated session is
replayed at 4x real time and what arrived is compared with the file.
"""

# %%
# A simulated session
# -------------------
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import mne
import numpy as np

from neuralign.config import load_config
from neuralign.offline.simulator import simulate
from neuralign.realtime.replay import LSLReplayer
from neuralign.realtime.replay.wiring import replay_source

TINY = {"n_train_concepts": 10, "images_per_train_concept": 3, "train_repetitions": 2,
        "n_test_concepts": 6, "test_repetitions": 4, "template_images_per_test_concept": 2,
        "sfreq": 500.0, "snr": 1.0, "seed": 7}
config = load_config("demo", [f"dataset.simulation.{k}={v}" for k, v in TINY.items()])
out = Path(tempfile.mkdtemp(prefix="neuralign-example-")) / "data"
result = simulate(config.dataset.simulation, out, preprocessing=config.preprocessing)
raw = mne.io.read_raw_fif(result.test_raw, preload=True, verbose="error")

# %%
# Replay it and read it with the package's LSL source
# ---------------------------------------------------
# ``replay_source`` connects a new source to the replay's data stream by its ``source_id`` and
# to its marker stream. The replayer waits for the source's inlets before it sends, so the
# buffer holds the recording from its first sample on. LSL discovery stays on this host
# (``neuralign/lsl_api.cfg``).
replayer = LSLReplayer.from_raw(raw, name="neuralign-example", speed=4.0, chunk_size=10)
source = replay_source(replayer)
replayer.start()
source.start()  # opens the inlets and starts the acquisition thread
t0 = time.perf_counter()
replayer.wait_done(timeout=30)
n_total = raw.n_times
while source.buffer.n_written < n_total and time.perf_counter() - t0 < 30:
    time.sleep(0.05)
time.sleep(0.2)  # the last markers
markers = source.pop_markers()
source.stop()
replayer.stop()
print(f"{source.description.name}: {len(source.description.ch_names)} channels at "
      f"{source.description.sfreq:g} Hz; received {source.buffer.n_written} of {n_total} "
      f"samples and {len(markers)} of {len(raw.annotations)} markers in "
      f"{time.perf_counter() - t0:.1f} s")

# %%
# What arrived is what was sent
# -----------------------------
# The samples are float32 on the wire; the markers carry the image ids of the annotations.
data, stamps = source.buffer.read(0, source.buffer.n_written)
sent = raw.get_data().astype(np.float32)
print("samples identical:", np.array_equal(data, sent[:, : data.shape[1]]))
print("first markers:", [m.value for m in markers[:4]])
clock = source.clock_report()
print(f"stream clock: stamp jitter p99 {clock.jitter_p99_ms:.2f} ms, {clock.gaps} gaps, "
      f"{clock.missing_samples} missing samples")

fig, ax = plt.subplots(figsize=(6, 3))
oz = raw.ch_names.index("Oz")
ax.plot(stamps - stamps[0], data[oz] * 1e6, lw=0.5)
for m in markers:
    ax.axvline(m.timestamp - stamps[0], color="r", lw=0.3)
ax.set(xlabel="LSL time since the first sample (s)", ylabel="Oz (µV)",
       title="received over LSL, markers in red")
fig.tight_layout()
