"""Image-dependent responses: visual dipoles for EEG/MEG, V1/V4/IT multi-unit activity.

EEG/MEG: three bilateral groups of dipoles in the volume source space,

- ``V1``: medial occipital, P1-like peak ~100 ms, tuned to low-level image features;
- ``LO``: lateral occipital, N1-like peak ~170 ms, tuned to low-level features and the latent;
- ``IT``: inferior temporal, P2-like peak ~250 ms, tuned to the image latent ``z_i``.

A dipole's single-trial amplitude is ``shared + u . f_i`` (a non-specific response plus linear
tuning to the image features ``f_i``), times a per-trial gain; its time course is a Gaussian bump
whose latency jitters from trial to trial.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neuralign.offline.simulator.forward import SensorModel
from neuralign.offline.simulator.paradigm import Paradigm

RESPONSE_WINDOW_S = 0.5  # each trial's response is synthesised over onset .. onset + 0.5 s
SNR_WINDOW_S = (0.07, 0.30)  # where the SNR is measured (post-stimulus)
TRIAL_LATENCY_SD_S = 0.006
REGION_LATENCY_SD_S = 0.004
TRIAL_GAIN_SD = 0.2  # log-normal per-trial amplitude variability
TUNING_STRENGTH = 1.2  # SD of the image-specific amplitude relative to the shared one


@dataclass(frozen=True)
class Region:
    name: str
    n_per_hemisphere: int
    latency_s: float
    width_s: float
    sign: float
    shared: float
    features: str  # 'low', 'mixed' or 'latent'


REGIONS = (
    Region("V1", 2, 0.100, 0.018, +1.0, 1.0, "low"),
    Region("LO", 3, 0.170, 0.026, -1.0, 1.3, "mixed"),
    Region("IT", 3, 0.250, 0.040, +1.0, 0.8, "latent"),
)


def _candidates(rel: np.ndarray, region: str, side: float) -> np.ndarray:
    """Source indices of a region on one hemisphere (side = +1 right, -1 left, 0 medial)."""
    x, y, z = rel[:, 0] * (side if side else 1.0), rel[:, 1], rel[:, 2]
    if region == "V1":
        ok = (np.abs(rel[:, 0]) <= 0.02) & (np.abs(z) <= 0.03)
        score = y
    elif region == "LO":
        ok = (x >= 0.03) & (np.abs(z) <= 0.03)
        score = y
    else:
        ok = (x >= 0.04) & (z <= 0.0) & (y > -0.045) & (y < 0.015)
        score = -x
    idx = np.flatnonzero(ok)
    if len(idx) == 0:  # tiny source spaces: fall back to the most posterior sources
        idx = np.arange(len(rel))
        score = y
    return idx[np.argsort(score[idx], kind="stable")]


@dataclass
class VisualSources:
    """Selected dipoles and their tuning: everything needed to synthesise single trials."""

    gain: np.ndarray  # (n_channels, n_dipoles) oriented gain
    latency: np.ndarray  # (n_dipoles,) s
    width: np.ndarray  # (n_dipoles,) s
    region: np.ndarray  # (n_dipoles,) region index
    amplitude: np.ndarray  # (n_images, n_dipoles) noise-free amplitude per image (signed)


def image_features(paradigm: Paradigm, kind: str) -> np.ndarray:
    """The feature vector a region is tuned to, z-scored per column."""
    low = paradigm.low_level
    lat = paradigm.z
    lat = (lat - lat.mean(0)) / (lat.std(0) + 1e-12)
    if kind == "low":
        return low
    if kind == "latent":
        return lat
    return np.concatenate([low, lat], axis=1)


def canonical_components(kinds: list[str], paradigm: Paradigm, n_components: int,
                         rng: np.random.Generator, strength: float) -> list[np.ndarray]:
    """A dataset's canonical tuning: per region (feature kind in ``kinds``), ``n_components``
    tuning vectors over that region's image features, (n_components, n_features) with entries
    N(0, strength^2 / n_features). Drawn from the dataset's seed and shared by all its subjects:
    the common low-dimensional image -> source-space structure they differ around."""
    out = []
    for kind in kinds:
        d = (image_features(paradigm, kind) if kind != "concept"
             else paradigm.concept_z).shape[1]
        out.append(rng.standard_normal((n_components, d)) * (strength / np.sqrt(d)))
    return out


def _mix_tuning(own: np.ndarray, canonical: np.ndarray, idiosyncrasy: float,
                rng: np.random.Generator) -> np.ndarray:
    """``sqrt(idiosyncrasy)`` of the subject's own tuning ``own`` (n, d) plus ``sqrt(1 -
    idiosyncrasy)`` of a random mixture (weights N(0, 1/M), same variance) of the canonical
    components (M, d)."""
    m = canonical.shape[0]
    w = rng.standard_normal((own.shape[0], m)) / np.sqrt(m)
    return np.sqrt(idiosyncrasy) * own + np.sqrt(1.0 - idiosyncrasy) * (w @ canonical)


def make_visual_sources(
    model: SensorModel, paradigm: Paradigm, rng: np.random.Generator,
    canonical: list[np.ndarray] | None = None, idiosyncrasy: float = 1.0,
) -> VisualSources:
    """Pick the visual dipoles, their orientations, latencies and tuning weights.

    ``canonical`` (per region, :func:`canonical_components`): a multi-subject dataset's shared
    tuning; each dipole's tuning is then ``sqrt(idiosyncrasy)`` its own plus the rest a random
    mixture of its region's canonical components. None: its own only (one subject).
    """
    rel = model.source_rr - model.r0
    idx, lat, width, reg, amps = [], [], [], [], []
    for r, region in enumerate(REGIONS):
        feats = image_features(paradigm, region.features)
        sides = (0.0,) if region.name == "V1" else (-1.0, 1.0)
        n_each = region.n_per_hemisphere * (2 if region.name == "V1" else 1)
        for side in sides:
            cand = _candidates(rel, region.name, side)
            pool = cand[: max(n_each * 3, n_each)]
            chosen = rng.choice(pool, min(n_each, len(pool)), replace=False)
            for src in chosen:
                idx.append(int(src))
                lat.append(region.latency_s + 0.008 * rng.standard_normal())
                width.append(region.width_s * rng.uniform(0.85, 1.15))
                reg.append(r)
                u = rng.standard_normal(feats.shape[1]) * (TUNING_STRENGTH / np.sqrt(feats.shape[1]))
                shared = region.sign * region.shared * rng.uniform(0.8, 1.2)
                if canonical is not None:
                    u = _mix_tuning(u[None, :], canonical[r], idiosyncrasy, rng)[0]
                amps.append(shared + abs(shared) * (feats @ u))
    idx_arr = np.asarray(idx)
    ori = rel[idx_arr] / np.linalg.norm(rel[idx_arr], axis=1, keepdims=True)  # roughly radial
    ori += 0.35 * rng.standard_normal(ori.shape)
    ori /= np.linalg.norm(ori, axis=1, keepdims=True)
    return VisualSources(
        gain=model.oriented_gain(idx_arr, ori), latency=np.asarray(lat), width=np.asarray(width),
        region=np.asarray(reg), amplitude=np.stack(amps, axis=1),
    )


@dataclass
class EvokedSynthesis:
    data: np.ndarray  # (n_channels, n_samples), unit scale (scaled later to the requested SNR)
    signal_rms: float  # RMS of each trial's own response: SNR channels x SNR window, all trials
    specific_rms: float  # same, for the image-specific part (response minus the mean over images)
    latency_shift_s: np.ndarray  # per trial
    gain: np.ndarray  # per trial


def synthesize_evoked(
    sources: VisualSources, image_index: np.ndarray, onsets: np.ndarray, n_samples: int,
    sfreq: float, snr_channels: np.ndarray, rng: np.random.Generator,
) -> EvokedSynthesis:
    """Add every trial's response at its onset; measure the per-trial RMS that defines SNR."""
    n_ch = sources.gain.shape[0]
    n_win = int(round(RESPONSE_WINDOW_S * sfreq))
    t = np.arange(n_win) / sfreq
    win = (t >= SNR_WINDOW_S[0]) & (t < SNR_WINDOW_S[1])
    n_reg = int(sources.region.max()) + 1
    mean_amp = sources.amplitude.mean(0)
    out = np.zeros((n_ch, n_samples))
    n_trials = len(onsets)
    trial_shift = TRIAL_LATENCY_SD_S * rng.standard_normal(n_trials)
    region_shift = REGION_LATENCY_SD_S * rng.standard_normal((n_trials, n_reg))
    trial_gain = np.exp(TRIAL_GAIN_SD * rng.standard_normal((n_trials, n_reg)))
    ss_total = ss_spec = 0.0
    n_pts = 0
    g_snr = sources.gain[snr_channels]
    for k in range(n_trials):
        lat = sources.latency + trial_shift[k] + region_shift[k, sources.region]
        shape = np.exp(-0.5 * ((t[None, :] - lat[:, None]) / sources.width[:, None]) ** 2)
        amp = sources.amplitude[image_index[k]] * trial_gain[k, sources.region]
        resp = sources.gain @ (amp[:, None] * shape)
        start = int(onsets[k])
        stop = min(n_samples, start + n_win)
        out[:, start:stop] += resp[:, : stop - start]
        own = resp[snr_channels][:, win]
        spec = g_snr @ ((amp - mean_amp * trial_gain[k, sources.region])[:, None] * shape[:, win])
        ss_total += float(np.sum(own**2))
        ss_spec += float(np.sum(spec**2))
        n_pts += own.size
    return EvokedSynthesis(
        out, float(np.sqrt(ss_total / n_pts)), float(np.sqrt(ss_spec / n_pts)), trial_shift,
        trial_gain.mean(1),
    )


def noise_free_response(sources: VisualSources, image: int | None, sfreq: float) -> np.ndarray:
    """Image ``image``'s response without trial variability, at unit scale (channels, window).

    ``None``: the shared response (the mean over all images, the part no image-specific tuning
    adds to). Why: the template a live stream's single trials are checked against.
    """
    n_win = int(round(RESPONSE_WINDOW_S * sfreq))
    t = np.arange(n_win) / sfreq
    shape = np.exp(-0.5 * ((t[None, :] - sources.latency[:, None]) / sources.width[:, None]) ** 2)
    amp = sources.amplitude.mean(0) if image is None else sources.amplitude[image]
    return sources.gain @ (amp[:, None] * shape)


# ---------------------------------------------------------------------------------------------
# Multi-unit activity

MUA_AREAS = (
    # name, latency s, rise s, decay s, features
    ("V1", 0.040, 0.008, 0.030, "low"),
    ("V4", 0.070, 0.012, 0.045, "mixed"),
    ("IT", 0.100, 0.015, 0.070, "concept"),
)
MUA_BASE_RATE = 20.0  # spikes/s
MUA_PEAK_RATE = 60.0  # mean stimulus-driven increase at the peak, spikes/s
MUA_SMOOTH_S = 0.005


def mua_channel_names(n_channels: int) -> tuple[list[str], np.ndarray]:
    """Names ``V1_0001``... and the area index of each channel (split into thirds)."""
    area = np.minimum(np.arange(n_channels) * len(MUA_AREAS) // n_channels, len(MUA_AREAS) - 1)
    counters = [0] * len(MUA_AREAS)
    names = []
    for a in area:
        counters[a] += 1
        names.append(f"{MUA_AREAS[a][0]}_{counters[a]:04d}")
    return names, area


@dataclass
class MuaTuning:
    """What each simulated unit is: its image tuning, response kernel and baseline rate.

    Drawn once per dataset and shared by its sessions, as the same electrodes record the
    training and the test session (a unit tuned anew per session would make the test session's
    responses unrelated to what a model learned on the training session).
    """

    drive: np.ndarray  # (channels, images) stimulus drive, spikes/s at snr 1
    kernels: np.ndarray  # (channels, response window samples), peak 1
    base: np.ndarray  # (channels,) baseline rate, spikes/s


def mua_tuning(paradigm: Paradigm, n_channels: int, sfreq: float,
               rng: np.random.Generator, canonical: list[np.ndarray] | None = None,
               idiosyncrasy: float = 1.0, latency_shift_s: float = 0.0) -> MuaTuning:
    """Each channel's driven rate is ``softplus(shared + u . f_i)`` with ``f_i`` the features its
    area is tuned to (V1 low-level, V4 mixed, IT concept), with the area's latency and time
    course. ``canonical`` / ``idiosyncrasy`` (multi-subject): as :func:`make_visual_sources`,
    per area; ``latency_shift_s`` is added to every area's latency."""
    _, area = mua_channel_names(n_channels)
    conc = paradigm.concept_z
    conc = (conc - conc.mean(0)) / (conc.std(0) + 1e-12)
    feats = {
        "low": paradigm.low_level,
        "mixed": image_features(paradigm, "mixed"),
        "concept": conc,
    }
    n_win = int(round(RESPONSE_WINDOW_S * sfreq))
    t = np.arange(n_win) / sfreq
    drive = np.zeros((n_channels, len(paradigm.image_ids)))
    kernels = np.zeros((n_channels, n_win))
    for a, (_, latency, rise, decay, kind) in enumerate(MUA_AREAS):
        chans = np.flatnonzero(area == a)
        f = feats[kind]
        u = rng.standard_normal((len(chans), f.shape[1])) * (1.5 / np.sqrt(f.shape[1]))
        if canonical is not None:
            u = _mix_tuning(u, canonical[a], idiosyncrasy, rng)
        x = 0.3 + f @ u.T  # (images, chans)
        drive[chans] = np.log1p(np.exp(x)).T
        lat = latency + latency_shift_s + 0.005 * rng.standard_normal(len(chans))
        tt = np.clip(t[None, :] - lat[:, None], 0.0, None)
        k = (1.0 - np.exp(-tt / rise)) * np.exp(-tt / decay)
        kernels[chans] = k / k.max(axis=1, keepdims=True)
    drive *= MUA_PEAK_RATE / drive.mean()
    base = MUA_BASE_RATE * rng.uniform(0.5, 1.5, n_channels)
    return MuaTuning(drive, kernels, base)


def synthesize_mua(
    paradigm: Paradigm, n_channels: int, image_index: np.ndarray, onsets: np.ndarray,
    n_samples: int, sfreq: float, snr: float, rng: np.random.Generator,
    tuning: MuaTuning | None = None,
) -> np.ndarray:
    """Poisson spike counts per sample, smoothed to a rate (spikes/s), float32 (channels, samples).

    ``tuning`` (:func:`mua_tuning`, shared by a dataset's sessions; drawn from ``rng`` when
    None) sets each channel's rates; ``snr`` scales the stimulus drive relative to the baseline
    rate, so Poisson variability and background fluctuations set the difficulty. ``rng`` draws
    this session's background state, trial gains and spikes.
    """
    if tuning is None:
        tuning = mua_tuning(paradigm, n_channels, sfreq, rng)
    drive, kernels, n_win = tuning.drive * snr, tuning.kernels, tuning.kernels.shape[1]
    # Slow shared fluctuation of excitability (a background state), then Poisson counts.
    state = np.cumsum(rng.standard_normal(n_samples)) / np.sqrt(sfreq * 20.0)
    state -= np.linspace(state[0], state[-1], n_samples)
    rate = np.repeat(tuning.base[:, None], n_samples, axis=1) * np.exp(0.2 * state)[None, :]
    gains = np.exp(0.2 * rng.standard_normal(len(onsets)))
    for k, (img, onset) in enumerate(zip(image_index, onsets)):
        stop = min(n_samples, int(onset) + n_win)
        rate[:, onset:stop] += gains[k] * (drive[:, img, None] * kernels)[:, : stop - onset]
    counts = rng.poisson(rate / sfreq).astype(np.float32)
    del rate
    width = max(1, int(round(MUA_SMOOTH_S * sfreq)))
    box = np.ones(width, dtype=np.float32) * (sfreq / width)
    out = np.empty_like(counts)
    for c in range(n_channels):  # causal boxcar: spikes/s over the last MUA_SMOOTH_S
        out[c] = np.convolve(counts[c], box)[:n_samples]
    return out
