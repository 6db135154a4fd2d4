"""The presenter's window: paints each frame, swaps, and reads the LSL clock right after.

Two ways to time a swap, chosen at start (``timing='auto'``) and written in every log row:

* ``opengl``: a :class:`QOpenGLWindow` with swap interval 1 (vsync) repaints every frame; its
  ``frameSwapped`` signal is the swap, stamped with ``local_clock()`` first thing. The frame
  period is the display's.
* ``raster``: where OpenGL is not available (the offscreen platform CI uses) a plain window with
  its own :class:`QBackingStore`: each frame is painted and flushed synchronously on a precise
  timer at the refresh rate, and the stamp is read right after the flush returns. Without vsync
  the "swap" is the flush to the window system; a photodiode tells the real screen lag.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PyQt6.QtCore import QCoreApplication, QEvent, QObject, QRect, QSize, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import (
    QBackingStore,
    QColor,
    QGuiApplication,
    QKeyEvent,
    QOpenGLContext,
    QPainter,
    QPixmap,
    QRegion,
    QSurfaceFormat,
    QWindow,
)
from PyQt6.QtOpenGL import QOpenGLWindow

from neuralign.realtime.lsl_io import local_clock
from neuralign.ui.presenter.session import Frame, Session

log = logging.getLogger(__name__)

PHOTODIODE_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
#: swaps timed before deciding whether the driver honours the swap interval
VSYNC_PROBE = 20
BACKGROUND = QColor(128, 128, 128)  # mid grey: no luminance step between images and blanks


def opengl_available() -> bool:
    """True when an OpenGL context can be created on this platform (not on ``offscreen``)."""
    if QGuiApplication.platformName() in ("offscreen", "minimal"):
        return False
    ctx = QOpenGLContext()
    return bool(ctx.create())


def choose_mode(timing: str = "auto") -> str:
    """``'opengl'`` or ``'raster'`` (``timing``: auto, opengl, raster), logged."""
    if timing not in ("auto", "opengl", "raster"):
        raise ValueError(f"timing must be auto, opengl or raster, got {timing!r}")
    gl = opengl_available()
    if timing == "opengl" and not gl:
        raise RuntimeError(f"no OpenGL on the Qt platform {QGuiApplication.platformName()!r}")
    mode = "opengl" if (timing == "opengl" or (timing == "auto" and gl)) else "raster"
    if mode == "opengl":
        log.info("swap timing: OpenGL, vsync (frameSwapped)")
    else:
        log.warning("swap timing: raster (no OpenGL on Qt platform %r): stamps are taken after a "
                    "synchronous paint and flush, without vsync",
                    QGuiApplication.platformName())
    return mode


def _wait_until(t: float) -> None:
    """Spin the last moments to ``t``: Qt's timers fire up to a millisecond early, and a frame
    painted before its grid point would put an onset before its requested time."""
    while local_clock() < t:
        pass


class FramePainter:
    """Draws a frame: background, the image centred, the photodiode patch."""

    def __init__(self, paths: dict[str, Path], box: QSize, photodiode: str | None = None,
                 patch_px: int = 40):
        if photodiode is not None and photodiode not in PHOTODIODE_CORNERS:
            raise ValueError(f"photodiode corner must be one of {PHOTODIODE_CORNERS}")
        self.photodiode, self.patch_px = photodiode, patch_px
        self.pixmaps: dict[str, QPixmap] = {}
        for image_id, path in paths.items():  # decoded and scaled once, before the first frame
            pm = QPixmap(str(path))
            if pm.isNull():
                raise ValueError(f"{path}: not an image Qt can read")
            self.pixmaps[image_id] = pm.scaled(box, Qt.AspectRatioMode.KeepAspectRatio,
                                               Qt.TransformationMode.SmoothTransformation)

    def paint(self, p: QPainter, rect: QRect, frame: Frame) -> None:
        p.fillRect(rect, BACKGROUND)
        if frame.image_id is not None:
            pm = self.pixmaps[frame.image_id]
            p.drawPixmap(rect.center().x() - pm.width() // 2,
                         rect.center().y() - pm.height() // 2, pm)
        if self.photodiode is not None:
            s = self.patch_px
            x = 0 if "left" in self.photodiode else rect.width() - s
            y = 0 if "top" in self.photodiode else rect.height() - s
            p.fillRect(QRect(x, y, s, s), Qt.GlobalColor.white if frame.photodiode_on
                       else Qt.GlobalColor.black)


class _Keys(QObject):
    """Space and Esc of the window go to the controller."""

    def __init__(self, on_key: Callable[[int], None]):
        super().__init__()
        self._on_key = on_key

    def eventFilter(self, obj: QObject | None, event: QEvent | None) -> bool:  # noqa: N802
        if event is not None and event.type() == QEvent.Type.KeyPress:
            assert isinstance(event, QKeyEvent)
            self._on_key(event.key())
            return True
        return False


class GLSurface(QOpenGLWindow):
    """vsync'd OpenGL window: repaints every frame, stamps on ``frameSwapped``."""

    def __init__(self, draw: Callable[[QPainter, QRect], None],
                 on_swap: Callable[[float], None], period: float):
        super().__init__(QOpenGLWindow.UpdateBehavior.NoPartialUpdate)
        fmt = QSurfaceFormat.defaultFormat()
        fmt.setSwapInterval(1)
        fmt.setSwapBehavior(QSurfaceFormat.SwapBehavior.DoubleBuffer)
        self.setFormat(fmt)
        self._draw, self._on_swap, self.period = draw, on_swap, period
        self.running = False
        self.vsync: bool | None = None  # known after VSYNC_PROBE swaps
        self._swaps: list[float] = []
        self._origin: float | None = None
        self._next = 0.0
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._paced_update)
        self.frameSwapped.connect(self._swapped)

    def paintGL(self) -> None:  # noqa: N802
        if self._origin is None:  # the first frame: the session's schedule starts here too
            self._origin = local_clock()
        p = QPainter(self)
        self._draw(p, QRect(0, 0, self.width(), self.height()))
        p.end()

    def _swapped(self) -> None:
        t = local_clock()  # first: the swap has just returned
        if not self.running:
            return
        self._on_swap(t)
        if self.vsync is None:
            self._probe(t)
        if self.vsync is False:  # no vblank to wait for: pace the frames on a timer grid
            self._next += self.period
            if self._next < t:  # late: skip the grid points already past (dropped frames)
                self._next += self.period * math.ceil((t - self._next) / self.period)
            self._timer.start(max(0, math.ceil((self._next - local_clock()) * 1e3)))
        else:
            self.update()  # the next frame: paintGL right away, swapped at the next vblank

    def _probe(self, t: float) -> None:
        """Is the swap interval honoured? Swaps block until the vblank only if their intervals
        sit at the refresh period (faster: no vsync; scattered: a loaded machine, where a timer
        paces better than trusting the swap to wait)."""
        self._swaps.append(t)
        if len(self._swaps) > VSYNC_PROBE:
            d = np.diff(self._swaps[2:])  # the first frames are slow (shader compilation)
            q25, median, q75 = np.percentile(d, [25, 50, 75])
            self.vsync = bool(abs(median - self.period) < 0.1 * self.period
                              and q75 - q25 < 0.1 * self.period)
            if not self.vsync:
                log.warning("OpenGL swaps every %.2f ms (IQR %.2f), not every %.2f ms: no "
                            "vsync; frames are paced by a timer", 1e3 * median,
                            1e3 * (q75 - q25), 1e3 * self.period)
                # the timer grid continues the first frame's phase (the schedule's)
                origin = self._origin if self._origin is not None else t
                self._next = origin + self.period * math.floor((t - origin) / self.period)

    @property
    def grid_time(self) -> float:
        return self._next

    def _paced_update(self) -> None:
        _wait_until(self._next)
        # paint and swap now: update() would wait for Qt's own refresh-rate throttle
        QCoreApplication.sendEvent(self, QEvent(QEvent.Type.UpdateRequest))

    def start(self) -> None:
        self.running = True
        self.update()

    def stop(self) -> None:
        self.running = False
        self._timer.stop()


class RasterSurface(QWindow):
    """A window with its own backing store: paint + flush synchronously, on a frame timer."""

    def __init__(self, draw: Callable[[QPainter, QRect], None],
                 on_swap: Callable[[float], None], period: float):
        super().__init__()
        self.setSurfaceType(QWindow.SurfaceType.RasterSurface)
        self._store = QBackingStore(self)
        self._draw, self._on_swap, self.period = draw, on_swap, period
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._tick)
        self._next = 0.0
        self.running = False

    def start(self) -> None:
        self.running = True
        self._next = local_clock()
        self._tick()

    def stop(self) -> None:
        self.running = False
        self._timer.stop()

    @property
    def grid_time(self) -> float:
        return self._next

    def _tick(self) -> None:
        if not self.running:
            return
        _wait_until(self._next)
        size = self.size()
        if self._store.size() != size:
            self._store.resize(size)
        rect = QRect(0, 0, size.width(), size.height())
        self._store.beginPaint(QRegion(rect))
        p = QPainter(self._store.paintDevice())
        self._draw(p, rect)
        p.end()
        self._store.endPaint()
        self._store.flush(QRegion(rect))
        t = local_clock()  # right after the synchronous flush
        self._on_swap(t)
        if not self.running:
            return
        # the next frame on the grid; a late frame skips grid points (counted as dropped)
        self._next += self.period
        now = local_clock()
        if self._next < now:
            self._next += self.period * int((now - self._next) / self.period + 1)
        self._timer.start(max(0, math.ceil((self._next - now) * 1e3)))  # never early


class PresenterController(QObject):
    """Runs a :class:`Session` in a window: plan, paint, swap, stamp; results and keys; closes
    the window and emits ``finished`` when the session is over or aborted."""

    finished = pyqtSignal()

    def __init__(self, session: Session, painter: FramePainter, mode: str, period: float,
                 poll_results: Callable[[], list] | None = None):
        super().__init__()
        self.session, self.painter, self.mode = session, painter, mode
        self._poll_results = poll_results
        self._frame = Frame(None)
        if mode == "opengl":
            self.surface: GLSurface | RasterSurface = GLSurface(self._draw, self._swapped, period)
        else:
            self.surface = RasterSurface(self._draw, self._swapped, period)
        self.surface.setTitle("neuralign present")
        session.paced = mode != "opengl"
        self._keys = _Keys(self._key)
        self.surface.installEventFilter(self._keys)
        self.done = False

    def show(self, windowed: bool, size: QSize) -> None:
        if windowed:
            self.surface.resize(size)
            self.surface.show()
        else:
            self.surface.showFullScreen()
        self.surface.setCursor(Qt.CursorShape.BlankCursor)
        self.surface.requestActivate()

    def start(self) -> None:
        self.surface.start()

    def _draw(self, p: QPainter, rect: QRect) -> None:
        now = local_clock()
        if self._poll_results is not None:
            self.session.poll(now, self._poll_results())
        grid = self.surface.grid_time if self.session.paced else None
        self._frame = self.session.plan(now, grid)
        self.painter.paint(p, rect, self._frame)

    def _swapped(self, t: float) -> None:
        if isinstance(self.surface, GLSurface):
            self.session.paced = self.surface.vsync is False
            if self.surface.vsync is False:
                self.session.mode = "opengl-novsync"  # in the log rows from here on
        self.session.swapped(t)
        if self.session.finished(t):
            self._finish(t)

    def _key(self, key: int) -> None:
        now = local_clock()
        if key == Qt.Key.Key_Space:
            paused = self.session.toggle_pause(now)
            log.warning("paused" if paused else "resumed")
        elif key == Qt.Key.Key_Escape:
            log.warning("aborted (Esc)")
            self.session.abort(now)
            self._finish(now)

    def abort(self) -> None:
        now = local_clock()
        self.session.abort(now)
        self._finish(now)

    def _finish(self, now: float) -> None:
        if self.done:
            return
        self.done = True
        self.surface.stop()
        if self._poll_results is not None and not self.session.aborted:
            self.session.poll(now, self._poll_results())
        self.session.close(now)
        self.surface.hide()
        self.finished.emit()
