"""
Train a tiny model, then decode a replayed session live
=======================================================

The whole path of ``neuralign demo`` in miniature, from Python: simulate, train a BrainAE for two
epochs, evaluate it against the ridge baselines, export a bundle, then replay the test session
over LSL and decode it with the :class:`~neuralign.realtime.engine.Engine` as a lab would decode
a headset. The model is far too small and short-trained to decode well; the point is the API.
"""

# %%
# Simulate and train
# ------------------
# ``run_training`` is what ``neuralign train`` does (prepare the epochs with the causal chain,
# fit the noise normalisation on training rows, train, keep the best epoch); the overrides make
# it take seconds.
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from neuralign.bundle import load_bundle
from neuralign.config import RealtimeConfig, load_config
from neuralign.offline.runs import evaluate_run, export_run
from neuralign.offline.simulator import simulate
from neuralign.offline.train import run_training
from neuralign.realtime.replay.session import replay_session

TINY = {"n_train_concepts": 10, "images_per_train_concept": 3, "train_repetitions": 2,
        "n_test_concepts": 6, "test_repetitions": 4, "template_images_per_test_concept": 2,
        "sfreq": 500.0, "snr": 1.0, "seed": 7}
FAST = ["training.epochs=2", "training.batch_size=16", "training.n_val_trials=4", "model.k=8",
        "training.device=cpu"]
config = load_config("demo", [f"dataset.simulation.{k}={v}" for k, v in TINY.items()] + FAST)
root = Path(tempfile.mkdtemp(prefix="neuralign-example-"))
simulate(config.dataset.simulation, root / "data", preprocessing=config.preprocessing)
history = run_training(config, root / "run", root / "data", progress=False)
print(f"best epoch {history['best_epoch']}, validation loss {history['best_val_loss']:.3f}")

# %%
# Evaluate against ridge
# ----------------------
# ``evaluate_run`` is ``neuralign evaluate``: zero-shot retrieval over the held-out concepts'
# images, classification, encoding, and the same for the ridge baselines.
report = evaluate_run(root / "run", masks=False)
for name, r in (("BrainAE", report["retrieval"]), ("ridge", report["ridge"]["retrieval"])):
    print(f"{name:8s} {r['n_way']}-way retrieval top-1 {r['top1']:.2f} "
          f"(chance {r['chance_top1']:.2f})")

# %%
# Export a bundle and decode live
# -------------------------------
# The bundle holds the weights, the template bank and everything the engine needs to rebuild
# the training's preprocessing. ``replay_session`` replays the test session over LSL (here at
# 4x real time) and builds an engine that reads it through an LSL source.
export_run(root / "run", root / "bundle")
bundle = load_bundle(root / "bundle")
session = replay_session(bundle, root / "data" / "sim_test_raw.fif", RealtimeConfig(),
                         speed=4.0, device="cpu")
session.start()
session.engine.wait_for(session.n_trials, timeout=60)
session.stop()
results = session.results_in_stimulus_order()
acc = session.accuracy()
print(f"{len(results)} of {session.n_trials} trials decoded live: single-trial top-1 "
      f"{acc['top1']:.2f} / top-5 {acc['top5']:.2f} (chance {acc['chance_top1']:.2f}), "
      f"averaged over up to {acc.get('avg_n_repetitions', 1)} repetitions top-1 "
      f"{acc.get('avg_top1', float('nan')):.2f}")
print("first result on the LSL result stream:", results[0].to_json()[:160], "...")

# %%
# Latency, epoch by epoch
# -----------------------
# Every result carries its stage durations (``stages_ms``): what the engine added between the
# last sample an epoch needed and the publication of its result.
total = np.array([sum(r.stages_ms.values()) for r in results])
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(total, "o-", ms=3)
ax.set(xlabel="trial", ylabel="engine time (ms)",
       title=f"p50 {np.percentile(total, 50):.1f} ms, max {total.max():.1f} ms")
fig.tight_layout()
