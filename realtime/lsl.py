"""Small helpers over pylsl: resolve with a timeout and a clear error, channel metadata, outlets.

Every LSL use in neuralign goes through here (or ``pylsl`` directly in tests) so that three rules
hold everywhere: discovery stays on this host unless the user configured LSL (importing
``neuralign`` points ``LSLAPICFG`` at the shipped local config before pylsl is imported), streams
are resolved with a timeout (pylsl's default is to wait forever), and channel labels/types are
written and read the standard way (``desc/channels/channel/{label,type,unit}``) so other LSL tools
(LabRecorder, mne-lsl) understand our streams and we understand theirs.
"""

from __future__ import annotations

import logging
import socket

# Importing this module imports the ``neuralign`` package first, which points ``LSLAPICFG`` at the
# local-host config before pylsl loads liblsl.
import pylsl
from pylsl import local_clock  # re-export: the one clock of the online engine
from pylsl.util import LostError

from neuralign.errors import UserError

log = logging.getLogger(__name__)

__all__ = [
    "LostError",
    "channel_names",
    "channel_types",
    "describe",
    "is_local",
    "local_clock",
    "make_outlet",
    "quote_xpath",
    "resolve_stream",
]

# Units written into the channel description, by MNE channel type (LSL convention: free text).
_UNITS = {"eeg": "volts", "meg": "teslas", "mag": "teslas", "grad": "teslas/meter",
          "eog": "volts", "ecg": "volts", "emg": "volts", "misc": "", "stim": ""}


def quote_xpath(value: str) -> str:
    """Quote a value for an XPath 1.0 predicate (handles both quote characters)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    parts = value.split("'")
    return "concat(" + ", \"'\", ".join(f"'{p}'" for p in parts) + ")"


def describe(name: str | None = None, stype: str | None = None,
             source_id: str | None = None) -> str:
    """Human-readable identity of a stream query, used in every error message."""
    parts = [f"{k}={v!r}" for k, v in (("name", name), ("type", stype), ("source_id", source_id))
             if v is not None]
    return ", ".join(parts) if parts else "any stream"


def resolve_stream(name: str | None = None, stype: str | None = None,
                   source_id: str | None = None, timeout: float = 5.0,
                   regular: bool | None = None) -> pylsl.StreamInfo:
    """Find one stream matching ALL the given properties within ``timeout`` seconds.

    ``regular=True`` keeps only streams with a nominal rate (data), ``False`` only irregular ones
    (markers): mne-lsl's player gives its annotation stream the SAME ``source_id`` as the data
    stream, so a query by ``source_id`` alone would be ambiguous. Raises :class:`UserError` naming
    the query and listing the streams that are visible when nothing matches, so a typo in a
    stream name is obvious from the message alone.
    """
    clauses = []
    if name is not None:
        clauses.append(f"name={quote_xpath(name)}")
    if stype is not None:
        clauses.append(f"type={quote_xpath(stype)}")
    if source_id is not None:
        clauses.append(f"source_id={quote_xpath(source_id)}")
    if regular is True:
        clauses.append("nominal_srate>0")
    elif regular is False:
        clauses.append("nominal_srate=0")
    pred = " and ".join(clauses) if clauses else "nominal_srate>=0"
    found = pylsl.resolve_bypred(pred, 1, timeout)
    if found:
        if len(found) > 1:
            log.warning("%d LSL streams match %s; using the first (%s @ %s)", len(found),
                        describe(name, stype, source_id), found[0].name(), found[0].hostname())
        return found[0]
    # not resolve_streams(): measured here it sometimes blocks 5.5 s instead of the given 0.5 s
    visible = pylsl.resolve_bypred("nominal_srate>=0", 1000, 0.5)
    listing = ", ".join(f"{s.name()!r} ({s.type()}, {s.channel_count()} ch @ "
                        f"{s.nominal_srate():g} Hz)" for s in visible) or "none"
    raise UserError(f"no LSL stream with {describe(name, stype, source_id)} found within "
                    f"{timeout:g} s (streams visible: {listing})")


def _channel_field(info: pylsl.StreamInfo, field: str) -> list[str]:
    out: list[str] = []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty() and len(out) < info.channel_count():
        out.append(ch.child_value(field))
        ch = ch.next_sibling("channel")
    return out


def channel_names(info: pylsl.StreamInfo) -> list[str]:
    """Channel labels from the stream's XML description, ``ch0..`` when absent or incomplete.

    Note: a StreamInfo from ``resolve_*`` carries no ``desc``; use ``inlet.info()`` for the full one.
    """
    names = _channel_field(info, "label")
    n = info.channel_count()
    if len(names) != n or not all(names):
        return [f"ch{i}" for i in range(n)]
    return names


def channel_types(info: pylsl.StreamInfo, default: str | None = None) -> list[str]:
    """Channel types (lower-cased, MNE style) from the XML description.

    Missing types default to ``default`` or, when None, to the stream type if it is a known MNE
    channel type (``EEG`` -> ``eeg``), else ``misc``.
    """
    types = [t.lower() for t in _channel_field(info, "type")]
    n = info.channel_count()
    if default is None:
        default = info.type().lower() if info.type().lower() in _UNITS else "misc"
    types += [""] * (n - len(types))
    return [t or default for t in types]


def make_outlet(name: str, stype: str, ch_names: list[str], sfreq: float, source_id: str,
                ch_types: list[str] | None = None, chunk_size: int = 0,
                dtype: str = "float32", max_buffered: int = 360) -> pylsl.StreamOutlet:
    """An outlet whose XML description lists every channel's label, type and unit.

    ``chunk_size=0`` lets each ``push_chunk`` go out as one transmission (no re-chunking); for
    irregular streams (``sfreq=0``) liblsl counts ``max_buffered`` in hundreds of samples.
    """
    info = pylsl.StreamInfo(name, stype, len(ch_names), float(sfreq), dtype, source_id)
    chans = info.desc().append_child("channels")
    types = ch_types or [stype.lower()] * len(ch_names)
    if len(types) != len(ch_names):
        raise ValueError(f"{len(ch_names)} channel names but {len(types)} types")
    for label, ctype in zip(ch_names, types, strict=True):
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("type", ctype)
        ch.append_child_value("unit", _UNITS.get(ctype.lower(), ""))
    info.desc().append_child("acquisition").append_child_value("manufacturer", "neuralign")
    return pylsl.StreamOutlet(info, chunk_size, max_buffered)


def is_local(info: pylsl.StreamInfo) -> bool:
    """True when the stream's outlet runs on this host (its clock IS our clock)."""
    return info.hostname() == socket.gethostname()
