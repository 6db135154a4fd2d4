"""Sensor layouts and the MNE sphere-model forward solution (nothing is downloaded).

EEG uses a standard MNE montage (for easycap-M1: the 63 channels THINGS-EEG2 recorded, in its
order). MEG uses 271 point magnetometers placed on a spherical helmet around the head (MNE ships
helmet surfaces but no sensor definitions that work offline without a measurement file, so the
helmet is built here). Gain matrices are cached per layout because they do not depend on the seed.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass

import mne
import numpy as np
from mne.io.constants import FIFF

logger = logging.getLogger(__name__)

# The 63 EEG channels of THINGS-EEG2 (Brain Products actiCAP 64, FCz reference), in recording order.
THINGS_EEG2_CHANNELS = (
    "Fp1", "Fz", "F3", "F7", "FT9", "FC5", "FC1", "C3", "T7", "TP9", "CP5", "CP1", "Pz", "P3",
    "P7", "O1", "Oz", "O2", "P4", "P8", "TP10", "CP6", "CP2", "Cz", "C4", "T8", "FT10", "FC6",
    "FC2", "F4", "F8", "Fp2", "AF7", "AF3", "AFz", "F1", "F5", "FT7", "FC3", "C1", "C5", "TP7",
    "CP3", "P1", "P5", "PO7", "PO3", "POz", "PO4", "PO8", "P6", "P2", "CPz", "CP4", "TP8", "C6",
    "C2", "FC4", "FT8", "F6", "AF8", "AF4", "F2",
)
N_MEG_SENSORS = 271
MEG_HELMET_RADIUS = 0.115  # m, from the sphere centre
# Occipito-parietal picks of the official THINGS-EEG2 preprocessing (regex '^O *|^P *').
_OCC_PAR = re.compile(r"^(O|P)")
_VISUAL = re.compile(r"^(O|P|I|TP|T7|T8)")


@dataclass(frozen=True)
class SensorModel:
    """Channels and the free-orientation gain of every source (n_channels, 3 * n_sources)."""

    info: mne.Info
    gain: np.ndarray
    source_rr: np.ndarray  # (n_sources, 3) m, head coordinates
    r0: np.ndarray  # sphere centre, m
    ch_pos: np.ndarray  # (n_channels, 3) m
    visual: np.ndarray  # bool (n_channels,) occipital / parietal / temporal
    occipital_parietal: np.ndarray  # bool (n_channels,) where the SNR is defined

    def oriented_gain(self, idx: np.ndarray, ori: np.ndarray) -> np.ndarray:
        """Gain of dipoles ``idx`` with unit orientations ``ori`` (n, 3) -> (n_channels, n)."""
        g = self.gain.reshape(self.gain.shape[0], -1, 3)[:, idx, :]
        return np.einsum("cnk,nk->cn", g, ori)


def eeg_channel_names(montage_name: str) -> list[str]:
    """EEG channels simulated for a montage: THINGS-EEG2's 63 for easycap-M1, else all of it."""
    montage = mne.channels.make_standard_montage(montage_name)
    if montage_name == "easycap-M1":
        return list(THINGS_EEG2_CHANNELS)
    return list(montage.ch_names)


def _meg_info(sfreq: float, r0: np.ndarray) -> mne.Info:
    """271 point magnetometers on the upper part of a sphere (Fibonacci lattice), radial normals."""
    n_total = int(N_MEG_SENSORS * 1.75)
    k = np.arange(n_total) + 0.5
    z = 1.0 - 2.0 * k / n_total
    phi = np.pi * (1 + 5**0.5) * k
    pts = np.stack([np.sqrt(1 - z**2) * np.cos(phi), np.sqrt(1 - z**2) * np.sin(phi), z], axis=1)
    # Keep the cap above the ears, extended down at the back (helmets cover the occiput).
    keep = pts[:, 2] > -0.35 + 0.25 * (pts[:, 1] > 0)
    pts = pts[keep][:N_MEG_SENSORS]
    names = [f"MEG{i + 1:04d}" for i in range(len(pts))]
    info = mne.create_info(names, sfreq, "mag")
    for ch, normal in zip(info["chs"], pts):
        ex = np.cross(normal, [0.0, 0.0, 1.0])
        if np.linalg.norm(ex) < 1e-6:
            ex = np.array([1.0, 0.0, 0.0])
        ex /= np.linalg.norm(ex)
        ey = np.cross(normal, ex)
        ch["loc"][:3] = r0 + MEG_HELMET_RADIUS * normal
        ch["loc"][3:12] = np.concatenate([ex, ey, normal])
        ch["coil_type"] = FIFF.FIFFV_COIL_POINT_MAGNETOMETER
        ch["coord_frame"] = FIFF.FIFFV_COORD_DEVICE
    with info._unlock():
        info["dev_head_t"] = mne.transforms.Transform("meg", "head", np.eye(4))
    return info


@functools.lru_cache(maxsize=4)
def _cached_model(modality: str, montage_name: str, sfreq: float) -> SensorModel:
    if modality == "eeg":
        names = eeg_channel_names(montage_name)
        info = mne.create_info(names, sfreq, "eeg")
        info.set_montage(mne.channels.make_standard_montage(montage_name))
        sphere = mne.make_sphere_model("auto", "auto", info, verbose=False)
        r0 = np.asarray(sphere["r0"], dtype=float)
    elif modality == "meg":
        r0 = np.array([0.0, 0.0, 0.04])
        sphere = mne.make_sphere_model(r0=tuple(r0), head_radius=None, verbose=False)
        info = _meg_info(sfreq, r0)
    else:
        raise ValueError(f"no forward model for modality {modality!r}")
    src = mne.setup_volume_source_space(
        sphere=sphere if modality == "eeg" else (r0[0], r0[1], r0[2], 0.09), pos=15.0,
        verbose=False,
    )
    fwd = mne.make_forward_solution(
        info, trans=None, src=src, bem=sphere, eeg=modality == "eeg", meg=modality == "meg",
        verbose=False,
    )
    gain = np.asarray(fwd["sol"]["data"], dtype=np.float64)
    names = info["ch_names"]
    ch_pos = np.array([ch["loc"][:3] for ch in info["chs"]])
    if modality == "eeg":
        visual = np.array([bool(_VISUAL.match(n)) for n in names])
        occ = np.array([bool(_OCC_PAR.match(n)) for n in names])
    else:
        rel = ch_pos - r0
        visual = rel[:, 1] < -0.02
        occ = (rel[:, 1] < -0.04) & (rel[:, 2] < 0.09)
    logger.info("forward model (%s, %d channels, %d sources) ready", modality, len(names), gain.shape[1] // 3)
    return SensorModel(info, gain, np.asarray(fwd["source_rr"]), r0, ch_pos, visual, occ)


def sensor_model(modality: str, montage_name: str, sfreq: float) -> SensorModel:
    """The (cached) channels + gain for ``eeg`` or ``meg``; a copy of ``info`` is safe to modify."""
    model = _cached_model(modality, montage_name, float(sfreq))
    return SensorModel(
        model.info.copy(), model.gain, model.source_rr, model.r0, model.ch_pos, model.visual,
        model.occipital_parietal,
    )
