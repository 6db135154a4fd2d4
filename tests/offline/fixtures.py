"""Writers of small files in the exact published layouts (nothing binary is committed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

EEG63 = [
    "Fp1",
    "Fz",
    "F3",
    "F7",
    "FT9",
    "FC5",
    "FC1",
    "C3",
    "T7",
    "TP9",
    "CP5",
    "CP1",
    "Pz",
    "P3",
    "P7",
    "O1",
    "Oz",
    "O2",
    "P4",
    "P8",
    "TP10",
    "CP6",
    "CP2",
    "Cz",
    "C4",
    "T8",
    "FT10",
    "FC6",
    "FC2",
    "F4",
    "F8",
    "Fp2",
    "AF7",
    "AF3",
    "AFz",
    "F1",
    "F5",
    "FT7",
    "FC3",
    "C1",
    "C5",
    "TP7",
    "CP3",
    "P1",
    "P5",
    "PO7",
    "PO3",
    "POz",
    "PO4",
    "PO8",
    "P6",
    "P2",
    "CPz",
    "CP4",
    "TP8",
    "C6",
    "C2",
    "FC4",
    "FT8",
    "F6",
    "AF8",
    "AF4",
    "F2",
]
OCC17 = [c for c in EEG63 if c.startswith(("O", "P"))]


def things_concepts(n: int, offset: int = 0) -> list[str]:
    """Concept folder names as THINGS-EEG2 spells them: '00001_aardvark'."""
    return [f"{offset + i + 1:05d}_thing{offset + i + 1}" for i in range(n)]


def write_image_metadata(
    image_set: Path,
    n_train_concepts: int,
    per_train: int,
    n_test: int,
    write_images: bool = True,
    templates_per_test: int = 0,
) -> dict:
    """``image_set/image_metadata.npy`` (+ tiny image files and template_images/ if asked)."""
    image_set.mkdir(parents=True, exist_ok=True)
    tr_con_names = things_concepts(n_train_concepts)
    te_con_names = things_concepts(n_test, offset=n_train_concepts)
    tr_con = [c for c in tr_con_names for _ in range(per_train)]
    tr_files = [
        f"{c.split('_', 1)[1]}_{k:02d}s.jpg" for c in tr_con_names for k in range(per_train)
    ]
    te_files = [f"{c.split('_', 1)[1]}_01b.jpg" for c in te_con_names]
    meta = {
        "train_img_concepts": tr_con,
        "train_img_files": tr_files,
        "test_img_concepts": te_con_names,
        "test_img_files": te_files,
    }
    np.save(image_set / "image_metadata.npy", meta)
    if write_images:
        for sub, cons, files in (
            ("training_images", tr_con, tr_files),
            ("test_images", te_con_names, te_files),
        ):
            for c, f in zip(cons, files):
                (image_set / sub / c).mkdir(parents=True, exist_ok=True)
                (image_set / sub / c / f).write_bytes(b"jpg")
    for c in te_con_names:
        for k in range(templates_per_test):
            (image_set / "template_images" / c).mkdir(parents=True, exist_ok=True)
            (image_set / "template_images" / c / f"{c.split('_', 1)[1]}_t{k}.jpg").write_bytes(
                b"jpg"
            )
    return meta


def write_preprocessed(
    folder: Path,
    variant: str = "nice",
    n_train: int = 8,
    n_test: int = 4,
    reps_train: int = 2,
    reps_test: int = 3,
    seed: int = 0,
    **overrides,
) -> dict[str, dict]:
    """``preprocessed_eeg_{training,test}.npy`` dicts.

    variant 'nice': 63 ch, 250 Hz, 250 samples from 0 s, ``times`` = 300 entries from -0.2 s;
    variant 'official': 17 ch, 100 Hz, 100 samples, ``times`` = -0.2..0.79 matching the data.
    Each sample encodes (image, rep, ch, t) so tests can check cropping and ordering exactly.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if variant == "nice":
        ch, n_t, times = EEG63, 250, np.round(np.arange(300) / 250.0 - 0.2, 6)
    else:
        ch, n_t, times = OCC17, 100, np.round(np.arange(100) / 100.0 - 0.2, 6)
    out = {}
    rng = np.random.default_rng(seed)
    for part, n_img, reps in (("training", n_train, reps_train), ("test", n_test, reps_test)):
        data = rng.standard_normal((n_img, reps, len(ch), n_t))
        data[:, :, 0, :] = np.arange(n_t)  # channel 0 = sample index: checks cropping
        data[:, :, 1, :] = np.arange(n_img)[:, None, None]  # channel 1 = image index: checks order
        d = {"preprocessed_eeg_data": data, "ch_names": list(ch), "times": times.copy()}
        d.update(overrides.get(part, {}))
        np.save(folder / f"preprocessed_eeg_{part}.npy", d)
        out[part] = d
    return out


def write_raw(
    path: Path,
    n_samples: int = 3000,
    events: list[tuple[int, int]] | None = None,
    sfreq: float = 1000.0,
    seed: int = 0,
    **overrides,
) -> dict:
    """``raw_eeg_{training,test}.npy``: (64, samples) = 63 EEG (volts) + 'stim' one-sample pulses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = np.zeros((64, n_samples))
    data[:63] = rng.standard_normal((63, n_samples)) * 10e-6
    if events is None:
        events = [(200, 1), (400, 5), (600, 99999), (800, 2), (1000, 16540), (1200, 99999)]
    for s, code in events:
        data[63, s] = code
    d = {
        "raw_eeg_data": data,
        "ch_names": EEG63 + ["stim"],
        "ch_types": ["eeg"] * 63 + ["stim"],
        "sfreq": sfreq,
        "highpass": 0.01,
        "lowpass": 100,
    }
    d.update(overrides)
    np.save(path, d)
    return d


def write_tvsd(
    path: Path,
    n_channels: int = 16,
    n_train_concepts: int = 5,
    per_concept: int = 3,
    n_test: int = 2,
    test_reps: int = 3,
    matlab_order: bool = True,
    seed: int = 0,
) -> dict:
    """``THINGS_MUA_trials.mat`` as MATLAB v7.3 writes it (HDF5 stores MATLAB's axes reversed).

    MATLAB view: ALLMUA (300 samples, trials, channels) -> stored (channels, trials, 300);
    ALLMAT (7, trials), rows [trial_idx, train_idx, test_idx, rep, count, correct, day], 1-based
    ids, 0 = not in that split -> stored (trials, 7). Trials are shuffled. The first ``n_test``
    training concepts are also the test concepts (zero-shot exclusion must remove them).
    """
    import h5py

    rng = np.random.default_rng(seed)
    n_train = n_train_concepts * per_concept
    train_paths = [
        f"c{c}/c{c}_{k:02d}.jpg" for c in range(n_train_concepts) for k in range(per_concept)
    ]
    test_paths = [f"c{c}/c{c}_test.jpg" for c in range(n_test)]
    trial_train = [i + 1 for i in range(n_train)] + [0] * (n_test * test_reps)
    trial_test = [0] * n_train + [1 + (k % n_test) for k in range(n_test * test_reps)]
    perm = rng.permutation(len(trial_train))
    trial_train = np.array(trial_train)[perm]
    trial_test = np.array(trial_test)[perm]
    n_trials = len(perm)
    allmat = np.zeros((7, n_trials))
    allmat[0] = np.arange(1, n_trials + 1)
    allmat[1] = trial_train
    allmat[2] = trial_test
    mua = (rng.standard_normal((300, n_trials, n_channels)) * 3 + 5).astype(
        np.float32
    )  # MATLAB view
    with h5py.File(path, "w") as f:
        if matlab_order:
            f["ALLMUA"] = mua.transpose(2, 1, 0)
            f["ALLMAT"] = allmat.T
        else:
            f["ALLMUA"] = mua
            f["ALLMAT"] = allmat
    return {"train_paths": train_paths, "test_paths": test_paths, "allmat": allmat, "mua": mua}


def write_meg(
    folder: Path,
    subject: int = 1,
    n_ch: int = 4,
    n_concepts: int = 6,
    per_concept: int = 2,
    n_test: int = 2,
    test_reps: int = 3,
    n_catch: int = 2,
    sfreq: float = 200.0,
    sidecar: bool = True,
) -> tuple[Path, list[dict]]:
    """``preprocessed_P{n}-epo.fif`` (EpochsArray, 'mag' channels, -0.1..0.295 s) + sample_attributes CSV."""
    import csv

    import mne

    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for c in range(n_concepts):
        for k in range(per_concept):
            rows.append({"trial_type": "exp", "image_path": f"images_meg/c{c}/c{c}_{k:02d}s.jpg"})
    for _ in range(test_reps):
        for c in range(n_test):
            rows.append({"trial_type": "test", "image_path": f"images_test_meg/c{c}/c{c}_test.jpg"})
    for k in range(n_catch):
        rows.append({"trial_type": "catch", "image_path": f"images_catch_meg/catch{k}.jpg"})
    n_t = int(0.4 * sfreq)
    rng = np.random.default_rng(subject)
    data = rng.standard_normal((len(rows), n_ch + 1, n_t)) * 1e-13
    data[:, 0, :] = np.arange(len(rows))[:, None] * 1e-12  # trial number: checks the mapping
    info = mne.create_info(
        [f"MLO{k:02d}-4408" for k in range(n_ch)] + ["UPPT001"], sfreq, ["mag"] * n_ch + ["stim"]
    )
    events = np.column_stack(
        [np.arange(len(rows)) * 400, np.zeros(len(rows), int), np.ones(len(rows), int)]
    )
    epochs = mne.EpochsArray(data, info, events=events, tmin=-0.1, verbose="error")
    fif = folder / f"preprocessed_P{subject}-epo.fif"
    epochs.save(fif, overwrite=True, verbose="error")
    if sidecar:
        with open(folder / f"sample_attributes_P{subject}.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["trial_type", "image_path"])
            w.writeheader()
            w.writerows(rows)
    return fif, rows


def write_allen_nwb(
    path: Path, n_frames: int = 6, reps: int = 3, n_units: int = 3, seed: int = 0
) -> dict:
    """A session NWB with AllenSDK's names: natural_scenes_presentations, units, electrodes.location."""
    from datetime import datetime, timezone

    from pynwb import NWBHDF5IO, NWBFile

    rng = np.random.default_rng(seed)
    nwb = NWBFile(
        session_description="fixture",
        identifier="fixture",
        session_start_time=datetime.now(timezone.utc),
    )
    dev = nwb.create_device("probeA")
    grp = nwb.create_electrode_group("probeA", description="", location="", device=dev)
    areas = ["VISp", "VISl", "CA1"]
    for ch in range(3):
        nwb.add_electrode(
            id=100 + ch, x=0.0, y=0.0, z=0.0, imp=0.0, location=areas[ch], filtering="", group=grp
        )
    frames = np.array([f for _ in range(reps) for f in list(range(n_frames)) + [-1]])
    starts = 1.0 + np.arange(len(frames)) * 0.5
    from pynwb.epoch import TimeIntervals

    table = TimeIntervals(name="natural_scenes_presentations", description="fixture")
    table.add_column(name="frame", description="image index, -1 blank")
    for s, f in zip(starts, frames):
        table.add_row(start_time=float(s), stop_time=float(s + 0.25), frame=float(f))
    nwb.add_time_intervals(table)
    nwb.add_unit_column(name="peak_channel_id", description="peak channel")
    spikes = []
    for u in range(n_units):
        # unit u fires (frame + 1 + u) spikes in 0..25 ms of every presentation, one in 25..50 ms
        st = []
        for s, f in zip(starts, frames):
            if f >= 0:
                st += list(s + 0.001 + np.arange(f + 1 + u) * 0.002)
            st.append(s + 0.03)
        spikes.append(np.sort(np.array(st)) + rng.uniform(0, 1e-5))
        nwb.add_unit(spike_times=spikes[-1], peak_channel_id=100 + u)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return {"frames": frames, "starts": starts, "spikes": spikes, "areas": areas}
