"""The current stimulus beside its top-k retrieved images and the repetition-average decision."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from PyQt6.QtCore import Qt
from PyQt6.QtGui import QPixmap
from PyQt6.QtWidgets import (
    QFrame,
    QGridLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from neuralign.realtime.decisions import Result
from neuralign.ui.panels.common import thumbnail_pixmap
from neuralign.ui.panels.registry import PanelContext, Slot, register_panel

if TYPE_CHECKING:
    from neuralign.ui.forms import Frame

TILE_PX = 64  # retrieved thumbnails (48 px in the bundle): readable at 1366x768 with k=5 in a row
STIM_PX = 112


class ThumbTile(QFrame):
    """One image: thumbnail (or its id as text when not in the template bank), id and score."""

    def __init__(self, size: int = TILE_PX, parent: QWidget | None = None):
        super().__init__(parent)
        self.size_px = size
        self.image_id: str | None = None
        self.score: float | None = None
        self.setFrameShape(QFrame.Shape.Box)
        self.setLineWidth(2)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.setSpacing(1)
        self.pic = QLabel()
        self.pic.setFixedSize(size, size)
        self.pic.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.pic.setWordWrap(True)
        self.text = QLabel()
        self.text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        f = self.text.font()
        f.setPointSize(8)
        self.text.setFont(f)
        lay.addWidget(self.pic, 0, Qt.AlignmentFlag.AlignHCenter)
        lay.addWidget(self.text)
        self.set_image(None, None, None)

    def set_image(self, image_id: str | None, pixmap: QPixmap | None, score: float | None,
                  highlight: bool = False) -> None:
        self.image_id, self.score = image_id, score
        if pixmap is not None:
            self.pic.setPixmap(pixmap)
            self.pic.setStyleSheet("")
        else:
            self.pic.clear()
            self.pic.setText("" if image_id is None else str(image_id))
            self.pic.setStyleSheet("background: #ddd; color: #333;")
        label = "" if image_id is None else str(image_id)
        if score is not None:  # NaN: the engine sent no usable score (null on the wire)
            label += f"\n{score:.3f}" if math.isfinite(score) else "\nn/a"
        self.text.setText(label)
        self.setStyleSheet("ThumbTile { border: 2px solid %s; }"
                           % ("#2a2" if highlight else "transparent"))

    def pixmap_key(self) -> int | None:
        pm = self.pic.pixmap()
        return None if pm is None or pm.isNull() else pm.cacheKey()


class StimulusPanel(QWidget):
    """Current stimulus beside its top-k retrieved images; below, the repetition-average decision.

    A tile is framed green when it is the image actually shown (ground truth known).
    """

    def __init__(self, template_ids: Sequence[str], thumbnails: np.ndarray, k: int = 5,
                 parent: QWidget | None = None,
                 pixmaps: Callable[[int], dict[str, QPixmap]] | None = None):
        super().__init__(parent)
        if pixmaps is None:  # ``pixmaps``: a window's shared cache (PanelContext.pixmaps)
            def pixmaps(size: int) -> dict[str, QPixmap]:
                return {tid: thumbnail_pixmap(thumbnails[i], size)
                        for i, tid in enumerate(template_ids) if i < len(thumbnails)}
        self.pixmaps = pixmaps(TILE_PX)
        self.stim_pixmaps = pixmaps(STIM_PX)
        self.k = k
        self.shown: Result | None = None  # the result currently displayed
        self.n_changes = 0

        lay = QGridLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        stim_box = QVBoxLayout()
        stim_box.addWidget(QLabel("<b>Stimulus</b>"))
        self.stim = ThumbTile(STIM_PX)
        stim_box.addWidget(self.stim)
        self.stim_info = QLabel("waiting for the first decoded epoch…")
        self.stim_info.setWordWrap(True)
        stim_box.addWidget(self.stim_info)
        stim_box.addStretch(1)
        lay.addLayout(stim_box, 0, 0, 2, 1)

        self.topk_title = QLabel("<b>Top-k retrieved (single trial)</b>")
        self.avg_title = QLabel("<b>Repetition average</b>")
        self.topk_grid, self.avg_grid = QGridLayout(), QGridLayout()
        for row, (title, grid) in enumerate(((self.topk_title, self.topk_grid),
                                             (self.avg_title, self.avg_grid))):
            box = QVBoxLayout()
            box.addWidget(title)
            box.addLayout(grid)
            box.addStretch(1)
            lay.addLayout(box, row, 1)
        lay.setColumnStretch(1, 1)
        self.topk_tiles: list[ThumbTile] = []
        self.avg_tiles: list[ThumbTile] = []
        self.set_k(k)

    def set_k(self, k: int) -> None:
        """Show ``k`` tiles per row (1-10); wraps at 5 so k=10 fits 1366 px."""
        self.k = int(min(10, max(1, k)))
        for tiles, grid in ((self.topk_tiles, self.topk_grid), (self.avg_tiles, self.avg_grid)):
            while len(tiles) < self.k:
                t = ThumbTile()
                grid.addWidget(t, len(tiles) // 5, len(tiles) % 5)
                tiles.append(t)
            for i, t in enumerate(tiles):
                t.setVisible(i < self.k)
        self.topk_title.setText(f"<b>Top-{self.k} retrieved (single trial)</b>")
        if self.shown is not None:
            r, self.shown = self.shown, None
            self.show_result(r)

    def _fill(self, tiles: list[ThumbTile], ids: Sequence[str], scores: Sequence[float],
              truth: str | None) -> None:
        for i, t in enumerate(tiles[: self.k]):
            if i < len(ids):
                tid = ids[i]
                t.set_image(tid, self.pixmaps.get(tid), float(scores[i]) if i < len(scores)
                            else None, highlight=truth is not None and tid == truth)
            else:
                t.set_image(None, None, None)

    def show_result(self, r: Result | None) -> bool:
        """Display one result (no-op when it is the one on screen). True if it changed.

        A NaN score (null on the strict LSL wire) shows as "n/a": the result is still shown.
        """
        if r is None or (self.shown is not None and r.epoch_id == self.shown.epoch_id):
            return False
        marker = r.marker
        self.stim.set_image(marker, self.stim_pixmaps.get(marker), None)
        if marker is None:
            self.stim.pic.setText("no marker\n(sliding window)")
        known = marker in self.pixmaps
        truth = marker if known else None
        info = f"epoch {r.epoch_id}"
        if marker is not None and not known:
            info += " — not in the template bank"
        self.stim_info.setText(info)
        self._fill(self.topk_tiles, r.topk_ids, r.topk_scores, truth)
        if r.avg_topk_ids:
            self.avg_title.setText(f"<b>Repetition average (n = {r.n_repetitions})</b>")
            self._fill(self.avg_tiles, r.avg_topk_ids, r.avg_topk_scores or [], truth)
        else:
            self.avg_title.setText("<b>Repetition average</b> (first presentation)")
            for t in self.avg_tiles:
                t.set_image(None, None, None)
        self.shown = r
        self.n_changes += 1
        return True

    def displayed_ids(self) -> list[str | None]:
        """The ids the top-k tiles show right now (read from the widgets, for tests and logs)."""
        return [t.image_id for t in self.topk_tiles[: self.k]]


@register_panel
class StimulusView:
    """The stimulus and top-k panel, top right (it takes the row's spare width)."""

    name = "stimulus"
    title = "Stimulus and retrieved images"
    slot = Slot.RIGHT_TOP
    order = 0
    stretch = 1

    def build(self, ctx: PanelContext) -> StimulusPanel:
        self.widget = StimulusPanel(ctx.bundle.template_ids, ctx.bundle.thumbnails, ctx.top_k,
                                    pixmaps=ctx.pixmaps)
        return self.widget

    def update(self, frame: Frame) -> None:
        self.widget.show_result(frame.latest)
