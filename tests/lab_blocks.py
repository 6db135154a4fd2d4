"""Lab-day blocks from a simulated dataset (the same subject, images and noise model).

Block 1 is what a lab records before training: the simulator's training session followed by the
first ``k`` repetition blocks of its test session. Block 2 is the rest of the test session, decoded
live with the new bundle. Both are continuous FIF files with one annotation per stimulus.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def make_lab_blocks(sim_dir: Path, out: Path, test_reps_in_block1: int) -> dict[str, Path]:
    """``{"block1": fif, "block2": fif, "test_ids": txt}`` (test ids: one per line)."""
    import mne

    out.mkdir(parents=True, exist_ok=True)
    with open(sim_dir / "events_test.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    split_s = min(float(r["onset_s"]) for r in rows if int(r["repetition"]) == test_reps_in_block1)
    test = mne.io.read_raw_fif(sim_dir / "sim_test_raw.fif", preload=True, verbose="error")
    # block 1 ends 1.2 s after the last onset it keeps (its epoch window completes)
    first = test.copy().crop(0, split_s + 1.2)
    first.annotations.delete(np.flatnonzero(first.annotations.onset - first.first_time >= split_s))
    second = test.copy().crop(split_s - 1.0, None)
    second.annotations.delete(np.flatnonzero(second.annotations.onset - test.first_time < split_s))
    train = mne.io.read_raw_fif(sim_dir / "sim_training_raw.fif", preload=True, verbose="error")
    block1 = mne.concatenate_raws([train, first], verbose="error")
    # one continuous recording, as a lab records block 1: concatenate_raws marks the join as a
    # discontinuity ('BAD/EDGE boundary'), which neuralign's readers restart the chain at
    block1.annotations.delete(np.flatnonzero(np.isin(block1.annotations.description,
                                                     ["BAD boundary", "EDGE boundary"])))
    paths = {"block1": out / "block1_raw.fif", "block2": out / "block2_raw.fif",
             "test_ids": out / "test_images.txt"}
    block1.save(paths["block1"], fmt="single", overwrite=True, verbose="error")
    second.save(paths["block2"], fmt="single", overwrite=True, verbose="error")
    paths["test_ids"].write_text("\n".join(sorted({r["image_id"] for r in rows})) + "\n")
    return paths
