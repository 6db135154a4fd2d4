"""Everything neuralign does with liblsl: resolving, inlets, outlets, channel metadata, clock sync.

The one module of neuralign that imports ``pylsl`` (tests may use it directly), so that four
rules hold everywhere:

* discovery stays on this host unless the user configured LSL (importing ``neuralign`` points
  ``LSLAPICFG`` at the shipped local config before pylsl is imported);
* streams are resolved with a timeout (pylsl's default is to wait forever), by ONE predicate
  builder (:func:`predicate`), with a :class:`~neuralign.errors.UserError` listing what is
  visible when nothing matches;
* inlets never use liblsl's silent recovery (``recover=False``): it hides outages from us and
  destroying an inlet while it recovers has crashed liblsl (sccn/liblsl#220); callers reconnect;
* channel labels/types are written and read the standard way (``desc/channels/channel/{label,
  type,unit}``) so other LSL tools (LabRecorder, mne-lsl) understand our streams and we theirs.
"""

from __future__ import annotations

import logging
import socket

import numpy as np

# Importing this module imports the ``neuralign`` package first, which points ``LSLAPICFG`` at the
# local-host config before pylsl loads liblsl. ``local_clock`` is the one clock of the engine.
import pylsl
from pylsl import ContinuousResolver, StreamInfo, StreamInlet, StreamOutlet, local_clock
from pylsl.util import LostError

from neuralign.errors import UserError

log = logging.getLogger(__name__)

__all__ = [
    "ContinuousResolver",
    "LostError",
    "NUMPY_DTYPES",
    "StreamInfo",
    "StreamInlet",
    "StreamOutlet",
    "channel_names",
    "channel_types",
    "channel_units",
    "clock_sync_flags",
    "describe",
    "find_stream",
    "is_local",
    "is_string_stream",
    "local_clock",
    "make_outlet",
    "open_inlet",
    "predicate",
    "quote_xpath",
    "resolve_stream",
    "watch_streams",
]

# Units written into the channel description, by MNE channel type (LSL convention: free text).
_UNITS = {"eeg": "volts", "meg": "teslas", "mag": "teslas", "grad": "teslas/meter",
          "eog": "volts", "ecg": "volts", "emg": "volts", "misc": "", "stim": ""}

#: numpy dtype of each numeric LSL channel format (a data stream must have one of these).
NUMPY_DTYPES = {pylsl.cf_float32: np.float32, pylsl.cf_double64: np.float64,
                pylsl.cf_int32: np.int32, pylsl.cf_int16: np.int16, pylsl.cf_int8: np.int8,
                pylsl.cf_int64: np.int64}


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


def predicate(name: str | None = None, stype: str | None = None, source_id: str | None = None,
              regular: bool | None = None) -> str:
    """The XPath predicate matching ALL the given properties (every resolve goes through here).

    ``regular=True`` keeps only streams with a nominal rate (data), ``False`` only irregular ones
    (markers): mne-lsl's player gives its annotation stream the SAME ``source_id`` as the data
    stream, so a query by ``source_id`` alone would be ambiguous.
    """
    clauses = [f"{k}={quote_xpath(v)}" for k, v in (("name", name), ("type", stype),
                                                   ("source_id", source_id)) if v is not None]
    if regular is True:
        clauses.append("nominal_srate>0")
    elif regular is False:
        clauses.append("nominal_srate=0")
    return " and ".join(clauses) if clauses else "nominal_srate>=0"


def find_stream(name: str | None = None, stype: str | None = None,
                source_id: str | None = None, timeout: float = 1.0,
                regular: bool | None = None) -> StreamInfo | None:
    """Quiet resolve (reconnection loops): the first match within ``timeout`` s, or None."""
    found = pylsl.resolve_bypred(predicate(name, stype, source_id, regular), 1, timeout)
    return found[0] if found else None


def resolve_stream(name: str | None = None, stype: str | None = None,
                   source_id: str | None = None, timeout: float = 5.0,
                   regular: bool | None = None) -> StreamInfo:
    """Find one stream matching ALL the given properties within ``timeout`` seconds.

    Raises :class:`UserError` naming the query and listing the streams that are visible when
    nothing matches, so a typo in a stream name is obvious from the message alone.
    """
    found = pylsl.resolve_bypred(predicate(name, stype, source_id, regular), 1, timeout)
    if found:
        if len(found) > 1:
            log.warning("%d LSL streams match %s; using the first (%s @ %s)", len(found),
                        describe(name, stype, source_id), found[0].name(), found[0].hostname())
        return found[0]
    # not resolve_streams(): measured here it sometimes blocks 5.5 s instead of the given 0.5 s
    visible = pylsl.resolve_bypred(predicate(), 1000, 0.5)
    listing = ", ".join(f"{s.name()!r} ({s.type()}, {s.channel_count()} ch @ "
                        f"{s.nominal_srate():g} Hz)" for s in visible) or "none"
    raise UserError(f"no LSL stream with {describe(name, stype, source_id)} found within "
                    f"{timeout:g} s (streams visible: {listing})")


def watch_streams(name: str | None = None, stype: str | None = None,
                  source_id: str | None = None, regular: bool | None = None,
                  forget_after: float = 2.0) -> ContinuousResolver:
    """A resolver searching in liblsl's own thread: ``.results()`` never blocks the caller."""
    return ContinuousResolver(pred=predicate(name, stype, source_id, regular),
                              forget_after=forget_after)


def is_local(info: StreamInfo) -> bool:
    """True when the stream's outlet runs on this host (its clock IS our clock)."""
    return info.hostname() == socket.gethostname()


def clock_sync_flags(info: StreamInfo, clock_sync: str) -> int:
    """Inlet processing flags: clock sync only for another host's stream (``'auto'``).

    On this host both ends read the same clock, so the true offset is exactly 0, while liblsl's
    estimate is biased by tens of microseconds of asymmetric loopback latency. ``'lsl'`` forces
    ``proc_clocksync``, ``'none'`` disables it. Never ``proc_dejitter``: it would move sample
    times away from the sender's stamps, which markers refer to.
    """
    if clock_sync not in ("auto", "lsl", "none"):
        raise ValueError(f"clock_sync must be 'auto', 'lsl' or 'none', got {clock_sync!r}")
    if clock_sync == "lsl" or (clock_sync == "auto" and not is_local(info)):
        return pylsl.proc_clocksync
    return 0


def open_inlet(info: StreamInfo, timeout: float = 5.0, max_buflen: int = 360,
               max_chunklen: int = 0, processing_flags: int = 0) -> StreamInlet:
    """An opened inlet without liblsl's recovery (the caller reconnects; see the module doc)."""
    inlet = StreamInlet(info, max_buflen=max_buflen, max_chunklen=max_chunklen, recover=False,
                        processing_flags=processing_flags)
    inlet.open_stream(timeout)
    return inlet


def is_string_stream(info: StreamInfo) -> bool:
    """True for a stream of strings (markers, JSON results), False for a numeric one."""
    return info.channel_format() == pylsl.cf_string


def _channel_field(info: StreamInfo, field: str) -> list[str]:
    out: list[str] = []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty() and len(out) < info.channel_count():
        out.append(ch.child_value(field))
        ch = ch.next_sibling("channel")
    return out


def channel_names(info: StreamInfo) -> list[str]:
    """Channel labels from the stream's XML description, ``ch0..`` when absent or incomplete.

    Note: a StreamInfo from ``resolve_*`` carries no ``desc``; use ``inlet.info()`` for the full one.
    """
    names = _channel_field(info, "label")
    n = info.channel_count()
    if len(names) != n or not all(names):
        return [f"ch{i}" for i in range(n)]
    return names


def channel_types(info: StreamInfo, default: str | None = None) -> list[str]:
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


def channel_units(info: StreamInfo) -> list[str]:
    """Each channel's ``unit`` from the XML description ('' where absent)."""
    units = _channel_field(info, "unit")
    return units + [""] * (info.channel_count() - len(units))


def make_outlet(name: str, stype: str, ch_names: list[str], sfreq: float, source_id: str,
                ch_types: list[str] | None = None, chunk_size: int = 0,
                dtype: str = "float32", max_buffered: int = 360,
                description: dict[str, str] | None = None,
                unit: str | None = None) -> StreamOutlet:
    """An outlet whose XML description lists every channel's label, type and unit.

    ``chunk_size=0`` lets each ``push_chunk`` go out as one transmission (no re-chunking); for
    irregular streams (``sfreq=0``) liblsl counts ``max_buffered`` in hundreds of samples.
    ``description``: further ``desc`` values (e.g. how to read a sample). ``unit``: every
    channel's unit (default: the SI unit of its type).
    """
    info = StreamInfo(name, stype, len(ch_names), float(sfreq), dtype, source_id)
    chans = info.desc().append_child("channels")
    types = ch_types or [stype.lower()] * len(ch_names)
    if len(types) != len(ch_names):
        raise ValueError(f"{len(ch_names)} channel names but {len(types)} types")
    for label, ctype in zip(ch_names, types, strict=True):
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("type", ctype)
        ch.append_child_value("unit", unit if unit is not None else _UNITS.get(ctype.lower(), ""))
    info.desc().append_child("acquisition").append_child_value("manufacturer", "neuralign")
    for key, value in (description or {}).items():
        info.desc().append_child_value(key, value)
    return StreamOutlet(info, chunk_size, max_buffered)
