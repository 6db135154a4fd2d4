"""A minimal XDF 1.0 writer for test fixtures, following the published specification
(https://github.com/sccn/xdf/wiki/Specifications), the structure LabRecorder writes:

    "XDF:" magic, then chunks [NumLengthBytes][Length][Tag uint16][Content], Length = 2 + content:
    1 FileHeader (XML) | 2 StreamHeader (StreamId uint32 + XML) | 3 Samples (StreamId +
    [NumSampleBytes][NumSamples] + per sample [TimeStampBytes 0|8][TimeStamp double][values];
    strings as [NumLengthBytes][Length][bytes]) | 4 ClockOffset (StreamId + CollectionTime double +
    OffsetValue double) | 5 Boundary (16-byte UUID) | 6 StreamFooter (StreamId + XML).

Timestamps are written in each stream's OWN clock (as LabRecorder stores them); ClockOffset
chunks give the offset to add to reach the recorder's clock. Little-endian throughout.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

BOUNDARY_UUID = bytes.fromhex("4380a80b76d54f6a8b2fc7f4abf30b8c")


def varlen(n: int) -> bytes:
    """XDF variable-length integer: a 1-byte width (1, 4 or 8) then the value."""
    if n < 256:
        return b"\x01" + struct.pack("<B", n)
    if n < 2**32:
        return b"\x04" + struct.pack("<I", n)
    return b"\x08" + struct.pack("<Q", n)


def chunk(tag: int, content: bytes) -> bytes:
    return varlen(len(content) + 2) + struct.pack("<H", tag) + content


@dataclass
class XdfStream:
    """One stream: numeric ``data`` (n, channels) or string ``labels``; ``timestamps`` in the
    stream's own clock; ``clock_offsets`` [(collection time, offset)] to the recorder clock."""

    name: str
    stype: str
    srate: float
    fmt: str  # 'float32' | 'double64' | 'string'
    timestamps: np.ndarray
    data: np.ndarray | None = None
    labels: list[str] | None = None
    channels: list[tuple[str, str, str]] = field(default_factory=list)  # (label, type, unit)
    clock_offsets: list[tuple[float, float]] = field(default_factory=list)
    deduce_every: int = 0  # >0: only every k-th sample carries its timestamp (spec allows it)

    @property
    def n_channels(self) -> int:
        return 1 if self.fmt == "string" else int(self.data.shape[1])

    def header_xml(self) -> bytes:
        chans = "".join(f"<channel><label>{escape(lab)}</label><type>{escape(t)}</type>"
                        f"<unit>{escape(u)}</unit></channel>" for lab, t, u in self.channels)
        return (f'<?xml version="1.0"?><info><name>{escape(self.name)}</name>'
                f"<type>{escape(self.stype)}</type><channel_count>{self.n_channels}</channel_count>"
                f"<nominal_srate>{self.srate:g}</nominal_srate>"
                f"<channel_format>{self.fmt}</channel_format><source_id>{escape(self.name)}-sid"
                f"</source_id><version>1.1</version><created_at>0</created_at>"
                f"<uid>{escape(self.name)}-uid</uid><session_id>default</session_id>"
                f"<hostname>fixture</hostname><desc><channels>{chans}</channels></desc>"
                f"</info>").encode()

    def footer_xml(self) -> bytes:
        offs = "".join(f"<offset><time>{t!r}</time><value>{v!r}</value></offset>"
                       for t, v in self.clock_offsets)
        ts = self.timestamps
        return (f'<?xml version="1.0"?><info><first_timestamp>{ts[0]!r}</first_timestamp>'
                f"<last_timestamp>{ts[-1]!r}</last_timestamp><sample_count>{len(ts)}"
                f"</sample_count><clock_offsets>{offs}</clock_offsets></info>").encode()

    def samples_chunk(self, sid: int, lo: int, hi: int) -> bytes:
        out = [struct.pack("<I", sid), varlen(hi - lo)]
        dtype = "<f4" if self.fmt == "float32" else "<f8"
        for k in range(lo, hi):
            if self.deduce_every and k % self.deduce_every:
                out.append(b"\x00")
            else:
                out.append(b"\x08" + struct.pack("<d", float(self.timestamps[k])))
            if self.fmt == "string":
                raw = self.labels[k].encode()
                out.append(varlen(len(raw)) + raw)
            else:
                out.append(np.asarray(self.data[k], dtype=dtype).tobytes())
        return chunk(3, b"".join(out))


def write_xdf(path: Path, streams: list[XdfStream], chunk_s: float = 0.5) -> Path:
    """Interleave the streams' samples in chunks of ``chunk_s`` (by recorder time), clock offsets
    as they fall due, a boundary chunk now and then, and a footer per stream."""
    parts = [b"XDF:", chunk(1, b'<?xml version="1.0"?><info><version>1.0</version></info>')]
    for sid, s in enumerate(streams, start=1):
        parts.append(chunk(2, struct.pack("<I", sid) + s.header_xml()))
    t_all = [s.timestamps + (s.clock_offsets[0][1] if s.clock_offsets else 0.0) for s in streams]
    t0 = min(t[0] for t in t_all if len(t))
    t1 = max(t[-1] for t in t_all if len(t))
    pos = [0] * len(streams)
    off_pos = [0] * len(streams)
    edge = t0
    n_chunks = 0
    while edge <= t1 + chunk_s:
        edge += chunk_s
        for sid, (s, t) in enumerate(zip(streams, t_all), start=1):
            hi = int(np.searchsorted(t, edge))
            if hi > pos[sid - 1]:
                parts.append(s.samples_chunk(sid, pos[sid - 1], hi))
                pos[sid - 1] = hi
            while off_pos[sid - 1] < len(s.clock_offsets) and \
                    s.clock_offsets[off_pos[sid - 1]][0] <= edge:
                ct, ov = s.clock_offsets[off_pos[sid - 1]]
                parts.append(chunk(4, struct.pack("<I", sid) + struct.pack("<dd", ct, ov)))
                off_pos[sid - 1] += 1
        n_chunks += 1
        if n_chunks % 10 == 0:
            parts.append(chunk(5, BOUNDARY_UUID))
    for sid, s in enumerate(streams, start=1):
        for ct, ov in s.clock_offsets[off_pos[sid - 1]:]:
            parts.append(chunk(4, struct.pack("<I", sid) + struct.pack("<dd", ct, ov)))
        parts.append(chunk(6, struct.pack("<I", sid) + s.footer_xml()))
    Path(path).write_bytes(b"".join(parts))
    return Path(path)
