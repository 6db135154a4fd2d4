"""BrainFlow boards (OpenBCI, Muse, ..., the synthetic board) acquired straight into the ring buffer.

BrainFlow has no LSL streamer, so this source reads the board itself and puts its samples on the
engine's clock:

* **Clock.** BrainFlow stamps samples with UNIX wall-clock seconds (``time.time()`` domain). The
  engine works on ``pylsl.local_clock()`` (monotonic). At ``open()`` the offset
  ``local_clock() - time.time()`` is estimated from 21 back-to-back pairs (the pair read in the
  shortest interval wins, so the estimate is good to a few microseconds) and added to every
  BrainFlow timestamp. It is not re-estimated: if NTP steps the wall clock during a session, the
  mapped timestamps step too (a backwards step shows up as a gap in ``health``).
* **Drops.** The package-number row counts 0..255 and wraps; a step other than +1 (mod 256) is a
  gap of ``step - 1`` samples (fewer than 256 missing are counted exactly, more alias).
* **Units.** BrainFlow EEG rows are microvolts; the buffer holds volts (MNE convention), so EEG
  rows are multiplied by 1e-6.
* **Markers.** ``insert_marker(v)`` (or the board's own trigger input) writes ``v`` into the
  marker row of the next sample; every non-zero value becomes ``Marker(timestamp of that
  sample, "v")`` (integral values without ``.0``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from neuralign.errors import UserError
from neuralign.realtime.lsl_io import local_clock
from neuralign.realtime.sources.base import Marker, Source, SourceHealth, StreamDescription

log = logging.getLogger(__name__)

POLL_WAIT_S = 0.002  # sleep between empty polls: bounds latency to ~2 ms + board delivery
UV_TO_V = 1e-6


def _board_shim():
    """Import BrainFlow lazily (it is heavy, and on Python 3.11 it needs setuptools<81)."""
    from brainflow.board_shim import BoardIds, BoardShim, BrainFlowInputParams

    return BoardIds, BoardShim, BrainFlowInputParams


def parse_board_id(board_id: int | str) -> int:
    """``'synthetic'``, a ``BoardIds`` name (``'CYTON_BOARD'``, case-insensitive, ``_BOARD``
    optional) or an int -> the integer board id; UserError otherwise."""
    BoardIds, _, _ = _board_shim()
    if isinstance(board_id, int):
        return int(board_id)
    key = str(board_id).strip().upper()
    if key.lstrip("-").isdigit():
        return int(key)
    for cand in (key, key + "_BOARD"):
        if cand in BoardIds.__members__:
            return BoardIds[cand].value
    names = ", ".join(sorted(n for n in BoardIds.__members__ if not n.startswith("NO_")))
    raise UserError(f"unknown BrainFlow board {board_id!r} (known: {names})")


def estimate_clock_offset(n_pairs: int = 21) -> float:
    """``local_clock() - time.time()``, from the tightest of ``n_pairs`` back-to-back reads."""
    best, offset = float("inf"), 0.0
    for _ in range(n_pairs):
        a = local_clock()
        w = time.time()
        b = local_clock()
        if b - a < best:
            best, offset = b - a, (a + b) / 2 - w
    return offset


class BrainFlowSource(Source):
    """A BrainFlow board as a :class:`Source` (EEG rows only, in volts, on the LSL clock)."""

    def __init__(self, board_id: int | str = "synthetic", params: dict[str, Any] | None = None,
                 buffer_seconds: float = 30.0, ring_size: int = 45000, quiet: bool = True,
                 markers: bool = False):
        super().__init__(buffer_seconds)
        # Whether stimuli arrive through the board's marker row (``insert_marker`` or a hardware
        # trigger). Explicit, because every board has the row but few setups use it; the engine
        # epochs on markers when True and slides a window when False.
        self.has_markers = markers
        self.board_id = parse_board_id(board_id)
        self.params = dict(params or {})
        self.ring_size = ring_size
        self.quiet = quiet
        self.clock_offset = 0.0
        self._board = None
        self._eeg_rows: list[int] = []
        self._ts_row = self._pkg_row = self._marker_row = -1
        self._last_pkg: int | None = None
        self._sfreq = 0.0

    def _label(self) -> str:
        return f"BrainFlow board {self.board_id} ({self.params or 'default params'})"

    def _connect(self) -> StreamDescription:
        _, BoardShim, BrainFlowInputParams = _board_shim()
        from brainflow.exit_codes import BrainFlowError

        if self.quiet:
            BoardShim.disable_board_logger()
        params = BrainFlowInputParams()
        for key, value in self.params.items():
            if not hasattr(params, key):
                fields = ", ".join(sorted(k for k in vars(params) if not k.startswith("_")))
                raise UserError(f"{self._label()}: unknown BrainFlow input parameter {key!r} "
                                f"(known: {fields})")
            setattr(params, key, value)
        bid = self.board_id
        try:
            descr = BoardShim.get_board_descr(bid)
            self._eeg_rows = list(BoardShim.get_eeg_channels(bid))
            self._ts_row = BoardShim.get_timestamp_channel(bid)
            self._marker_row = BoardShim.get_marker_channel(bid)
            self._sfreq = float(BoardShim.get_sampling_rate(bid))
        except BrainFlowError as exc:
            raise UserError(f"{self._label()}: not an EEG board BrainFlow knows ({exc})") from exc
        try:
            self._pkg_row = BoardShim.get_package_num_channel(bid)
        except BrainFlowError:
            self._pkg_row = -1
        try:
            ch_names = list(BoardShim.get_eeg_names(bid))
        except BrainFlowError:
            ch_names = []
        if len(ch_names) != len(self._eeg_rows):
            ch_names = [f"EEG{i + 1}" for i in range(len(self._eeg_rows))]
        board = BoardShim(bid, params)
        try:
            board.prepare_session()
            board.start_stream(self.ring_size)
        except BrainFlowError as exc:
            try:
                board.release_session()
            except BrainFlowError:
                pass
            raise UserError(f"{self._label()}: cannot start the session ({exc})") from exc
        self._board = board
        self.clock_offset = estimate_clock_offset()
        self.health = SourceHealth(connected=True)
        name = str(descr.get("name", f"board{bid}"))
        ident = (self.params.get("serial_port") or self.params.get("mac_address")
                 or self.params.get("ip_address") or self.params.get("serial_number") or "")
        log.info("BrainFlow %s started: %d EEG ch @ %g Hz, clock offset %.6f s", name,
                 len(ch_names), self._sfreq, self.clock_offset)
        return StreamDescription(name=name, stype="EEG", sfreq=self._sfreq, ch_names=ch_names,
                                 ch_types=["eeg"] * len(ch_names),
                                 units=["microvolts"] * len(ch_names),
                                 scales=[UV_TO_V] * len(ch_names),
                                 source_id=f"brainflow-{name.lower()}"
                                 + (f"-{ident}" if ident else ""))

    def insert_marker(self, value: float) -> None:
        """Write ``value`` (non-zero) into the marker row of the board's next sample."""
        if value == 0:
            raise ValueError("a BrainFlow marker value must be non-zero (0 means 'no marker')")
        if self._board is None:
            raise RuntimeError("source not open")
        self._board.insert_marker(float(value))

    def _acquire_once(self) -> None:
        data = self._board.get_board_data()  # drains the board's ring
        n = data.shape[1]
        if n == 0:
            self._stop.wait(POLL_WAIT_S)
            return
        ts = data[self._ts_row] + self.clock_offset
        if self._pkg_row >= 0:
            pkg = data[self._pkg_row].astype(np.int64)
            steps = np.diff(pkg, prepend=pkg[0] - 1 if self._last_pkg is None
                            else self._last_pkg) % 256
            bad = np.flatnonzero(steps != 1)
            for i in bad:
                missing = int((steps[i] - 1) % 256)
                self.health.n_gaps += 1
                self.health.n_dropped += missing
                self.buffer.mark_gap(self.buffer.n_written + int(i))  # epochs across: dropped
                msg = f"gap: package number jumps by {steps[i]} (~{missing} samples missing) " \
                      f"at t={ts[i]:.4f}"
                self.health.events.append(msg)
                log.warning("%s: %s", self._label(), msg)
            self._last_pkg = int(pkg[-1])
        # the package counter counts drops exactly; without one, the clock model finds them
        self._write(data[self._eeg_rows] * UV_TO_V, ts, arrival=local_clock(),
                    count_gaps=self._pkg_row < 0)
        self.health.n_received += n
        if self._marker_row >= 0:
            marks = data[self._marker_row]
            now = local_clock()
            for i in np.flatnonzero(marks != 0):
                v = float(marks[i])
                self.markers.append(Marker(timestamp=float(ts[i]),
                                           value=str(int(v)) if v.is_integer() else repr(v),
                                           received=now))

    def _disconnect(self) -> None:
        if self._board is None:
            return
        from brainflow.exit_codes import BrainFlowError

        board, self._board = self._board, None
        for step in (board.stop_stream, board.release_session):
            try:
                step()
            except BrainFlowError as exc:
                log.debug("BrainFlow teardown: %s", exc)
