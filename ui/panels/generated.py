"""The image the bundle's generator made of the latest decoded epoch, beside the true stimulus."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PyQt6.QtCore import Qt
from PyQt6.QtGui import QPixmap
from PyQt6.QtWidgets import QLabel, QStackedLayout, QVBoxLayout, QWidget

from neuralign.realtime.decisions import Generated, Result
from neuralign.ui.panels.common import IN_PROCESS_HINT, thumbnail_pixmap, unavailable_label
from neuralign.ui.panels.registry import PanelContext, Slot, register_panel
from neuralign.ui.panels.stimulus import STIM_PX, ThumbTile

if TYPE_CHECKING:
    from neuralign.ui.forms import Frame

#: What the panel says when it cannot show generated images, by reason.
NO_GENERATOR = "this bundle has no generator (neuralign export --generator GEN_RUN adds one)"
ATTACH_MODE = ("generator not available in attach mode: only results travel on the LSL result "
               f"stream (use {IN_PROCESS_HINT})")


def image_rgb(image: np.ndarray) -> np.ndarray:
    """(S, S) or (S, S, 3) float in [0, 1] -> (S, S, 3) uint8 for a pixmap."""
    img = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return (img * 255).round().astype(np.uint8)


class GeneratedPanel(QWidget):
    """Shows :class:`Generated` images as they come (one per decoded epoch, the newest wins).

    ``unavailable``: None when the feed delivers generated images, else the reason shown instead.
    ``show_generated`` is a no-op for the image already on screen (30 fps timer, cheap).
    """

    def __init__(self, unavailable: str | None = None, parent: QWidget | None = None,
                 fallback: dict[str, QPixmap] | None = None):
        super().__init__(parent)
        #: retrieved-image pixmaps by image id: with a generator that failed its validation the
        #: panel shows the retrieved top-1 image and says why (see show_retrieved)
        self.fallback = fallback if unavailable and fallback else None
        self.available = unavailable is None or self.fallback is not None
        self.shown: Generated | Result | None = None
        self.n_changes = 0
        outer = QVBoxLayout(self)
        outer.setContentsMargins(2, 2, 2, 2)
        outer.addWidget(QLabel("<b>Generated</b>"))
        self.stack = QStackedLayout()
        page = QWidget()
        lay = QVBoxLayout(page)
        lay.setContentsMargins(0, 0, 0, 0)
        self.tile = ThumbTile(STIM_PX)
        self.tile.pic.setText("waiting…")
        lay.addWidget(self.tile, 0, Qt.AlignmentFlag.AlignHCenter)
        self.info = QLabel(f"retrieved top-1 shown instead: {unavailable}" if self.fallback
                           else "from the decoded brain embedding")
        self.info.setWordWrap(True)
        lay.addWidget(self.info)
        lay.addStretch(1)
        self.stack.addWidget(page)
        self.stack.addWidget(unavailable_label(unavailable or ""))
        outer.addLayout(self.stack)
        self.stack.setCurrentIndex(0 if self.available else 1)

    def show_retrieved(self, r: Result | None) -> bool:
        """Fallback mode only: the retrieved top-1 image of result ``r``."""
        if self.fallback is None or r is None or r is self.shown:
            return False
        ids = r.topk_ids
        if not ids or ids[0] not in self.fallback:
            return False
        self.tile.set_image(ids[0], self.fallback[ids[0]], None)
        self.shown = r
        self.n_changes += 1
        return True

    def show_generated(self, g: Generated | None) -> bool:
        """Display ``g`` unless it is on screen already; True when the picture changed."""
        if self.fallback is not None or not self.available or g is None or g is self.shown:
            return False
        self.tile.set_image(None, thumbnail_pixmap(image_rgb(g.image), STIM_PX), None)
        self.info.setText(f"epoch {g.epoch_id}" + (f" (shown: {g.marker})" if g.marker else ""))
        self.shown = g
        self.n_changes += 1
        return True


def unavailable_text(reason: str) -> str | None:
    """The panel's note for a feed's ``generated_unavailable()`` code (None: images come)."""
    if not reason:
        return None
    return {"attach": ATTACH_MODE, "no generator": NO_GENERATOR}.get(reason, reason)


@register_panel
class GeneratedView:
    """The generated image, top right beside the stimulus.

    A generator that failed its validation makes no images: the panel then shows each epoch's
    retrieved top-1 image (the stimulus panel's pixmaps) and says why.
    """

    name = "generated"
    title = "Generated image"
    slot = Slot.RIGHT_TOP
    order = 1
    stretch = 0

    def build(self, ctx: PanelContext) -> GeneratedPanel:
        off = ctx.feed.generated_unavailable()
        gated = off not in ("", "attach", "no generator")
        self.widget = GeneratedPanel(unavailable_text(off),
                                     fallback=ctx.pixmaps(STIM_PX) if gated else None)
        return self.widget

    def update(self, frame: Frame) -> None:
        self.widget.show_generated(frame.generated)
        self.widget.show_retrieved(frame.latest)
