"""Small helpers every panel uses: non-interactive plots, thumbnails, placeholder labels,
buttons that leave the keyboard to the window, Pearson r of two traces."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt
from PyQt6.QtGui import QColor, QImage, QPixmap
from PyQt6.QtWidgets import QLabel, QPushButton

#: How to get the in-process viewer (traces, masking): the attach-mode panels say it.
IN_PROCESS_HINT = "neuralign run --bundle B --source S (without --headless)"


def pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two traces; NaN when either is constant or not finite."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def static_plot() -> pg.PlotWidget:
    """A plot the user cannot pan, zoom or open a context menu on: the panels redraw it live."""
    plot = pg.PlotWidget()
    plot.setMouseEnabled(False, False)
    plot.hideButtons()
    plot.setMenuEnabled(False)
    return plot


def thumbnail_pixmap(rgb: np.ndarray, size: int) -> QPixmap:
    """A QPixmap of an (h, w, 3) uint8 image scaled to ``size`` px (QImage copies the buffer)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    img = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    return QPixmap.fromImage(img).scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                                         Qt.TransformationMode.SmoothTransformation)


def unavailable_label(text: str) -> QLabel:
    """The grey note a panel shows instead of data this viewer cannot get (says why)."""
    lab = QLabel(text)
    lab.setWordWrap(True)
    lab.setAlignment(Qt.AlignmentFlag.AlignCenter)
    lab.setStyleSheet("color: #777; font-style: italic; padding: 12px;")
    return lab


def _flat_button(text: str, tip: str) -> QPushButton:
    """A panel button that never takes the keyboard focus (shared by the panels of this package)."""
    b = QPushButton(text)
    b.setToolTip(tip)
    # buttons must not take keyboard focus: Space is the window's pause key, not "press button"
    b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    return b


def color_text(text: str, color: QColor | str | None) -> str:
    """Rich text in a color (status-bar labels)."""
    if color is None:
        return text
    c = color.name() if isinstance(color, QColor) else color
    return f"<span style='color:{c}'>{text}</span>"
