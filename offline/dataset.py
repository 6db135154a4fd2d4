"""The in-memory form every loader returns: epochs per image and repetition, plus image metadata.

One container for THINGS-EEG2 / THINGS-MEG / TVSD / Allen / the simulator, so training and
evaluation never care where data came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class SplitData:
    """One split: ``data`` is (n_images, n_repetitions, n_channels, n_times), float32."""

    data: np.ndarray
    image_ids: list[str]
    concepts: list[str]

    def __post_init__(self) -> None:
        if self.data.ndim != 4:
            raise ValueError(f"split data must be 4-D (images, reps, channels, times), got {self.data.shape}")
        if len(self.image_ids) != self.data.shape[0] or len(self.concepts) != self.data.shape[0]:
            raise ValueError(
                f"{self.data.shape[0]} images of data but {len(self.image_ids)} image ids and "
                f"{len(self.concepts)} concepts"
            )

    @property
    def n_images(self) -> int:
        return self.data.shape[0]

    @property
    def n_repetitions(self) -> int:
        return self.data.shape[1]


@dataclass
class BrainDataset:
    """Train and zero-shot test splits of one subject, on a common channel and time axis."""

    train: SplitData
    test: SplitData
    ch_names: list[str]
    ch_types: list[str]
    sfreq: float
    times: np.ndarray  # (n_times,) seconds relative to stimulus onset, matching data[..., :]
    modality: str  # 'eeg' | 'meg' | 'mua'
    # image_id -> path of the image file (absolute), when the images are on disk.
    image_files: dict[str, Path] = field(default_factory=dict)
    # test concept -> ids of NON-stimulus images of that concept (classification templates).
    template_ids: dict[str, list[str]] = field(default_factory=dict)
    # Where the epochs came from: 'neuralign-causal' (cut from raw by neuralign's own causal chain:
    # live parity is exact) or 'external-preprocessed' (someone else's pipeline: parity approximate).
    provenance: str = "external-preprocessed"
    source: str = ""
    # Whose data this is (e.g. "1" for THINGS-EEG2 sub-01); several subjects prepared together
    # label every row with it (Prepared.row_subject / Prepared.subjects).
    subject: str = ""

    def __post_init__(self) -> None:
        for name, split in (("train", self.train), ("test", self.test)):
            if split.data.shape[2] != len(self.ch_names):
                raise ValueError(
                    f"{name} split has {split.data.shape[2]} channels but {len(self.ch_names)} ch_names"
                )
            if split.data.shape[3] != len(self.times):
                raise ValueError(
                    f"{name} split has {split.data.shape[3]} samples but times has {len(self.times)}"
                )
        if len(self.ch_types) != len(self.ch_names):
            raise ValueError("ch_types and ch_names differ in length")
        overlap = set(self.train.concepts) & set(self.test.concepts)
        if overlap:
            raise ValueError(
                f"zero-shot split broken: {len(overlap)} test concepts also in training "
                f"(e.g. {sorted(overlap)[:3]})"
            )

    @property
    def n_channels(self) -> int:
        return len(self.ch_names)

    @property
    def n_times(self) -> int:
        return len(self.times)
