"""The engine against device timing profiles x {no gap, one real gap} x {V, uV}, in all pairs.

Each profile meets both gap settings and both units, and each gap setting both units (an
all-pairs design: 8 cases instead of the product's 16, each a real-time replay of ~10 s); the
full product, and the NaN fault, is ``neuralign bench field`` (docs/field.md).

Every case replays the simulated test session over real LSL the way that device delivers it
(stamps, chunking, jitter, drift, stalls), the engine decodes it live and records it, and the
reference is offline decoding of the recording (what arrived, placed and cut as recorded). Every
epoch whose samples all arrived must be decoded with the offline top-1; exactly the epochs that
span the gap are dropped and counted; the gap itself is reported once with its sample count.
"""

from __future__ import annotations

import mne
import pytest

from neuralign.bundle import load_bundle
from neuralign.offline.field import FieldCase, run_field_case

#: how far the gap's position may be off, in epochs, by profile: inside a delivery whose stamps
#: were taken at its arrival (a 16 ms FTDI tick, a 47 ms BLE notification) the hole's sample
#: cannot be known, so an epoch whose window edge lies that close may count on either side
EDGE_EPOCHS = {"wired-1khz": 0, "brainflow": 0, "cyton-dongle": 1, "consumer-256": 1}
#: samples the reported loss may differ by (same reason)
EDGE_SAMPLES = {"wired-1khz": 0, "brainflow": 0, "cyton-dongle": 8, "consumer-256": 12}


#: (profile, gap, unit): every pair of values of two of the three factors occurs
ALL_PAIRS = [(profile, gap, unit if i % 2 == 0 else ("uV" if unit == "V" else "V"))
             for i, profile in enumerate(["wired-1khz", "cyton-dongle", "consumer-256",
                                          "brainflow"])
             for gap, unit in ((False, "V"), (True, "uV"))]


def test_the_cases_cover_every_pair():
    pairs = [{(p, g) for p, g, _ in ALL_PAIRS}, {(p, u) for p, _, u in ALL_PAIRS},
             {(g, u) for _, g, u in ALL_PAIRS}]
    assert [len(x) for x in pairs] == [8, 8, 4] and len(ALL_PAIRS) == 8


@pytest.mark.slow
@pytest.mark.parametrize(("profile", "gap", "unit"), ALL_PAIRS,
                         ids=[f"{p}-{'one-gap' if g else 'no-gap'}-{u}" for p, g, u in ALL_PAIRS])
def test_every_complete_epoch_is_decoded_as_offline(tiny_bundle, profile, gap, unit):
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = mne.io.read_raw_fif(data_dir / "sim_test_raw.fif", preload=True, verbose="error")
    o = run_field_case(bundle, raw, FieldCase(profile, gap=gap, unit=unit))
    info = (o, o.extra)
    assert o.finite, info
    assert o.decoded == o.expected, info  # every complete epoch decoded, nothing else
    assert o.parity == o.decoded, info  # with the offline top-1
    assert o.gaps_reported == o.gaps_injected == (1 if gap else 0), info
    assert o.gap_epochs_dropped == o.gap_epochs_expected, info
    assert abs(o.gap_epochs_dropped - o.gap_epochs_true) <= EDGE_EPOCHS[profile], info
    assert abs(o.samples_reported_lost - o.samples_lost) <= EDGE_SAMPLES[profile], info
    if gap:
        assert o.gap_epochs_true > 0, "the gap must hit epochs for the case to mean anything"
    else:
        assert o.decoded == o.n_markers, info
    assert o.unit_warning == "", info  # microvolts declared as such are no unit mistake
