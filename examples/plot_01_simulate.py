"""
Simulate a small experiment and look at it
==========================================

The built-in simulator writes a THINGS-like RSVP experiment: images of concepts, a zero-shot
split, and continuous EEG made with an MNE forward model (V1-, LO- and IT-like sources, pink
noise, alpha, blinks, line noise). Here a tiny version of the demo dataset is simulated, and the
images and the evoked response over the occipital channels are plotted.
"""

# %%
# Simulate
# --------
# ``load_config`` reads a shipped config by name (``demo``) and applies ``section.key=value``
# overrides, as ``--set`` does on the command line. These settings make a dataset of a few
# seconds; the demo's own is 60 training concepts.
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import mne
import numpy as np
from PIL import Image

from neuralign.config import load_config
from neuralign.offline.simulator import image_paths, simulate

TINY = {"n_train_concepts": 10, "images_per_train_concept": 3, "train_repetitions": 2,
        "n_test_concepts": 6, "test_repetitions": 4, "template_images_per_test_concept": 2,
        "sfreq": 500.0, "snr": 1.0, "seed": 7}
config = load_config("demo", [f"dataset.simulation.{k}={v}" for k, v in TINY.items()])
out = Path(tempfile.mkdtemp(prefix="neuralign-example-")) / "data"
result = simulate(config.dataset.simulation, out, preprocessing=config.preprocessing)
print(result.summary())

# %%
# The images
# ----------
# Each concept is a latent (shape, hue, size, grating orientation and frequency); its images are
# drawn around it. The image id is the file name without extension.
paths = image_paths(result.out_dir)
fig, axes = plt.subplots(2, 6, figsize=(9, 3.2))
for ax, image_id in zip(axes.flat, list(paths)[:12]):
    ax.imshow(Image.open(paths[image_id]))
    ax.set_title(image_id, fontsize=7)
    ax.axis("off")
fig.tight_layout()

# %%
# The continuous recording
# ------------------------
# Each session is a FIF file with one annotation per stimulus onset (description = image id):
# what an amplifier and a stimulus PC would have recorded.
raw = mne.io.read_raw_fif(result.train_raw, preload=True, verbose="error")
print(raw)
print(raw.annotations[:3])

# %%
# The evoked response
# -------------------
# Epoching around the annotations and averaging shows the P1/N1/P2-like response the sources
# produce, strongest over the occipital channels.
raw.filter(0.1, 40.0, verbose="error")
events, _ = mne.events_from_annotations(raw, verbose="error")
epochs = mne.Epochs(raw, events, tmin=-0.1, tmax=0.5, baseline=(None, 0), preload=True,
                    event_repeated="drop", verbose="error")
occipital = [ch for ch in ("O1", "Oz", "O2", "PO7", "PO8") if ch in raw.ch_names]
evoked = epochs.average()
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(evoked.times * 1e3, evoked.copy().pick(occipital).data.T * 1e6)
ax.axvline(0, color="k", lw=0.5)
ax.set(xlabel="time after onset (ms)", ylabel="µV", title="mean over all trials")
ax.legend(occipital, fontsize=7)
fig.tight_layout()
print(f"{len(epochs)} trials; peak |amplitude| over {occipital}: "
      f"{np.abs(evoked.copy().pick(occipital).data).max() * 1e6:.1f} µV")
