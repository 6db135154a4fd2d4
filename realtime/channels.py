"""Map a stream's channels onto the channels a bundle's model needs, by name.

Matching is case-insensitive and knows the common aliases of the 10-20 system (old T3/T4/T5/T6
names vs T7/T8/P7/P8, Oz vs OZ, "EEG Fp1-REF" style prefixes and suffixes). A stream that lacks
channels is refused with one message listing what is missing and what is extra, unless the user
allows a few to be filled by the model's masked-channel reconstruction (``--fill-missing``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from neuralign.errors import UserError

# channel types by what they measure: a stream channel of another family cannot feed the model
_FAMILY = {"eeg": "electric", "eog": "electric", "ecg": "electric", "emg": "electric",
           "seeg": "electric", "ecog": "electric", "dbs": "electric", "mag": "magnetic",
           "grad": "magnetic", "meg": "magnetic", "ref_meg": "magnetic", "stim": "trigger",
           "marker": "trigger", "markers": "trigger", "annotations": "trigger"}
ALIASES = {"t3": "t7", "t4": "t8", "t5": "p7", "t6": "p8", "tp9": "a1", "tp10": "a2"}
MAX_FILL_FRACTION = 0.2


def canonical(name: str) -> str:
    """Lower-case, strip 'EEG ' prefixes and '-REF'/'-LE' suffixes, map old 10-20 names."""
    n = name.strip().lower()
    n = re.sub(r"^(eeg|meg|mua)[\s_-]+", "", n)
    n = re.sub(r"[-_](ref|le|ar|avg)$", "", n)
    return ALIASES.get(n, n)


@dataclass
class ChannelMap:
    """``index[i]`` = stream column of model channel i, or -1 when it is missing (filled)."""

    index: np.ndarray
    missing: list[str]
    extra: list[str]

    @property
    def has_missing(self) -> bool:
        return bool(self.missing)

    @property
    def present(self) -> np.ndarray:
        """Model channel indices the stream provides."""
        return np.flatnonzero(self.index >= 0)

    def apply(self, data: np.ndarray) -> np.ndarray:
        """(stream channels, n) -> (model channels, n); missing channels are zeros."""
        out = np.zeros((len(self.index), data.shape[1]), dtype=data.dtype)
        ok = self.index >= 0
        out[ok] = data[self.index[ok]]
        return out


def map_channels(stream_names: list[str], model_names: list[str], fill_missing: bool = False,
                 stream_label: str = "the stream") -> ChannelMap:
    lookup: dict[str, int] = {}
    for i, name in enumerate(stream_names):
        lookup.setdefault(canonical(name), i)
    index = np.array([lookup.get(canonical(n), -1) for n in model_names], dtype=np.int64)
    missing = [n for n, i in zip(model_names, index) if i < 0]
    used = set(index[index >= 0].tolist())
    extra = [n for i, n in enumerate(stream_names) if i not in used]
    if missing:
        allowed = int(MAX_FILL_FRACTION * len(model_names))
        if not fill_missing or len(missing) > allowed:
            hint = (f"; --fill-missing can reconstruct at most {allowed}" if fill_missing
                    else "; pass --fill-missing to reconstruct a few from the others")
            raise UserError(
                f"{stream_label}: channel mismatch with the bundle: missing {len(missing)} "
                f"({', '.join(missing[:12])}{'...' if len(missing) > 12 else ''}), extra "
                f"{len(extra)} ({', '.join(extra[:12])}{'...' if len(extra) > 12 else ''}){hint}"
            )
    return ChannelMap(index, missing, extra)


def check_types(cmap: ChannelMap, stream_types: list[str], model_names: list[str],
                model_types: list[str], stream_label: str = "the stream") -> None:
    """One UserError when a matched stream channel measures something else than the model's
    channel (an EEG model fed magnetometers or a trigger channel). Unknown types pass."""
    wrong = []
    for name, mtype, i in zip(model_names, model_types, cmap.index):
        if i < 0 or i >= len(stream_types):
            continue
        a, b = _FAMILY.get(stream_types[i].lower()), _FAMILY.get(mtype.lower())
        if a is not None and b is not None and a != b:
            wrong.append(f"{name} is {stream_types[i]!r}, the model expects {mtype!r}")
    if wrong:
        raise UserError(f"{stream_label}: channel type mismatch with the bundle: "
                        f"{'; '.join(wrong[:6])}{' ...' if len(wrong) > 6 else ''} "
                        f"({len(wrong)} channels)")
