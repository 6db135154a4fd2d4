"""Allen Brain Observatory Visual Coding Neuropixels, natural scenes (NWB via pynwb, extra ``[nwb]``).

Reads a session NWB as AllenSDK writes it: ``intervals['natural_scenes_presentations']``
(``start_time``, ``frame``: 0..117, -1 = blank), ``units`` (``spike_times``, ``peak_channel_id``)
and ``electrodes`` (``location`` = structure acronym, e.g. VISp). Output: spike counts per
presentation x unit x time bin over 0-250 ms (image, repetition, unit, bin); blanks dropped.

There is no published zero-shot split for the 118 scenes: neuralign holds out ``n_test`` frames
chosen by a seeded permutation (each frame is its own "concept"), documented in the dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neuralign.errors import DataError
from neuralign.offline.dataset import BrainDataset, SplitData

from ._common import group_by_image

log = logging.getLogger(__name__)

STIMULUS_TABLE = "natural_scenes_presentations"
N_FRAMES = 118


def _pynwb():
    try:
        import pynwb
    except ImportError:
        raise DataError(
            "reading Allen NWB files needs pynwb, which is not installed: pip install neuralign[nwb]"
        ) from None
    return pynwb


def spike_counts(spikes: np.ndarray, starts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts (n_presentations, n_bins) of sorted ``spikes`` in ``starts + edges`` windows."""
    bounds = starts[:, None] + edges[None, :]
    idx = np.searchsorted(spikes, bounds.ravel(), side="left").reshape(bounds.shape)
    return np.diff(idx, axis=1)


@dataclass
class _Session:
    """What the loader reads from one session NWB (spike trains as NWB stores them)."""

    starts: np.ndarray  # presentation onsets, s
    frames: np.ndarray  # scene per presentation, -1 = blank
    spikes: np.ndarray  # all units' spike times, concatenated
    ends: np.ndarray  # end index in ``spikes`` of each unit's train
    unit_ids: np.ndarray
    locations: list[str]  # structure acronym per unit ("unknown" without electrode locations)


def _presentations(nwb, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(start times, frames) of the natural-scene presentations table."""
    if nwb.intervals is None or STIMULUS_TABLE not in nwb.intervals:
        found = sorted(nwb.intervals) if nwb.intervals is not None else []
        raise DataError(f"{path}: missing intervals table {STIMULUS_TABLE!r} (found {found})")
    table = nwb.intervals[STIMULUS_TABLE]
    if "frame" not in table.colnames:
        raise DataError(
            f"{path}: {STIMULUS_TABLE}: missing column 'frame' (found {list(table.colnames)})"
        )
    starts = np.asarray(table["start_time"].data[:], dtype=np.float64)
    frames = np.rint(np.asarray(table["frame"].data[:], dtype=np.float64)).astype(int)
    return starts, frames


def _unit_locations(nwb, units, n_units: int) -> list[str]:
    """Each unit's structure, via its peak channel's electrode location."""
    if not (
        "peak_channel_id" in units.colnames
        and nwb.electrodes is not None
        and "location" in nwb.electrodes.colnames
    ):
        return ["unknown"] * n_units
    chan_loc = dict(
        zip(
            np.asarray(nwb.electrodes.id.data[:]).tolist(),
            [str(x) for x in nwb.electrodes["location"].data[:]],
        )
    )
    return [chan_loc.get(int(c), "unknown") for c in units["peak_channel_id"].data[:]]


def _read_session(path: Path) -> _Session:
    """The presentations and the units' spike trains and locations of one session NWB."""
    pynwb = _pynwb()
    with pynwb.NWBHDF5IO(str(path), "r", load_namespaces=True) as io:
        nwb = io.read()
        starts, frames = _presentations(nwb, path)
        units = nwb.units
        if units is None or "spike_times" not in units.colnames:
            raise DataError(f"{path}: units: missing column 'spike_times'")
        st = units["spike_times"]
        flat = np.asarray(st.target.data[:], dtype=np.float64)
        ends = np.asarray(st.data[:], dtype=np.int64)
        unit_ids = np.asarray(units.id.data[:])
        loc = _unit_locations(nwb, units, len(unit_ids))
    return _Session(starts, frames, flat, ends, unit_ids, loc)


def _binned_counts(ses: _Session, keep_units: list[int], edges: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(counts (presentations, units, bins), frames) of the shown scenes in onset order."""
    shown = ses.frames >= 0
    starts, frames = ses.starts[shown], ses.frames[shown]
    order = np.argsort(starts, kind="stable")
    starts, frames = starts[order], frames[order]
    counts = np.empty((len(starts), len(keep_units), len(edges) - 1), dtype=np.float32)
    for j, u in enumerate(keep_units):
        lo = ses.ends[u - 1] if u > 0 else 0
        spikes = np.sort(ses.spikes[lo : ses.ends[u]])
        counts[:, j] = spike_counts(spikes, starts, edges)
    return counts, frames


def load_allen_natural_scenes(
    path: str | Path,
    bin_size: float = 0.01,
    window: float = 0.25,
    areas: Sequence[str] | None = None,
    n_test: int = 18,
    seed: int = 0,
) -> BrainDataset:
    """Spike counts for the 118 natural scenes of one session, split into train/test frames."""
    _pynwb()
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: NWB file not found")
    n_bins = int(round(window / bin_size))
    edges = np.arange(n_bins + 1) * bin_size
    ses = _read_session(path)
    loc, unit_ids = ses.locations, ses.unit_ids
    keep_units = [k for k, a in enumerate(loc) if areas is None or a in set(areas)]
    if not keep_units:
        raise DataError(
            f"{path}: units: no unit in areas {list(areas or [])} (found {sorted(set(loc))})"
        )
    counts, frames = _binned_counts(ses, keep_units, edges)
    ids = [f"allen_ns_{f:03d}" for f in frames]
    uniq, rows = group_by_image(ids, path, "natural-scene")
    uniq_frames = sorted(set(frames.tolist()))
    if n_test >= len(uniq_frames):
        raise DataError(f"{path}: n_test={n_test} but only {len(uniq_frames)} frames were shown")
    rng = np.random.default_rng(seed)
    test_frames = set(rng.permutation(uniq_frames)[:n_test].tolist())
    pos = {i: k for k, i in enumerate(uniq)}
    te = sorted(f"allen_ns_{f:03d}" for f in test_frames)
    tr = sorted(i for i in uniq if i not in set(te))
    data = counts  # (presentations, units, bins)
    ch_names = [f"{loc[u]}-{unit_ids[u]}" for u in keep_units]
    return BrainDataset(
        train=SplitData(data[rows[[pos[i] for i in tr]]], tr, list(tr)),
        test=SplitData(data[rows[[pos[i] for i in te]]], te, list(te)),
        ch_names=ch_names,
        ch_types=["misc"] * len(ch_names),
        sfreq=1.0 / bin_size,
        times=edges[:-1].copy(),
        modality="mua",
        provenance="external-preprocessed",
        source=str(path),
    )
