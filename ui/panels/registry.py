"""The panel registry: the viewer window lays out and feeds whatever panels are registered here.

Why: a new panel must not need edits across the window, the feeds and the engine. A panel is
one class in one module of ``ui/panels/``, decorated with :func:`register_panel`; the window
calls :func:`discover_panels` (imports every module of this package), builds one instance of
each registered class per window, places its widget in its :class:`Slot` and calls
``update(frame)`` on every display tick. Example (``ui/panels/epoch_counter.py``)::

    from PyQt6.QtWidgets import QLabel, QWidget

    from neuralign.ui.forms import Frame
    from neuralign.ui.panels.registry import PanelContext, Slot, register_panel


    @register_panel
    class EpochCounter:
        name = "epoch_counter"
        title = "Epochs"
        slot = Slot.RIGHT_BOTTOM
        order = 10
        stretch = 0

        def build(self, ctx: PanelContext) -> QWidget:
            self.label = QLabel("no epoch yet")
            return self.label

        def update(self, frame: Frame) -> None:
            if frame.results:
                self.label.setText(f"epoch {frame.results[-1].epoch_id}")
"""

from __future__ import annotations

import enum
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from PyQt6.QtCore import Qt

from neuralign.ui.panels.common import thumbnail_pixmap

if TYPE_CHECKING:
    from PyQt6.QtGui import QPixmap
    from PyQt6.QtWidgets import QWidget

    from neuralign.bundle import Bundle
    from neuralign.ui.feeds import Feed
    from neuralign.ui.forms import Frame

#: The package whose modules :func:`discover_panels` imports.
PANEL_PACKAGE = "neuralign.ui.panels"


class Slot(enum.Enum):
    """Where a panel goes in the window; panels sharing a slot are split along its orientation.

    LEFT is the tall column (the traces), RIGHT_TOP the row above RIGHT_BOTTOM on the right.
    """

    LEFT = "left"
    RIGHT_TOP = "right_top"
    RIGHT_BOTTOM = "right_bottom"

    @property
    def orientation(self) -> Qt.Orientation:
        if self is Slot.LEFT:
            return Qt.Orientation.Vertical
        return Qt.Orientation.Horizontal


@dataclass
class PanelContext:
    """What a panel builds its widget from: the bundle, the feed and the window's options.

    Read the feed's capabilities (``supports_traces``, ``generated_unavailable()``) and send it
    requests (``set_masked``); never poll it: the window does, once per tick, and hands the
    result to every panel as a :class:`~neuralign.ui.forms.Frame`.
    """

    bundle: Bundle
    feed: Feed
    window_s: float = 5.0  # seconds of traces shown
    top_k: int = 5  # retrieved images to show at first
    #: opens the window's channel picker (the C key does the same)
    choose_channels: Callable[[], None] = lambda: None
    _pixmaps: dict[int, dict[str, QPixmap]] = field(default_factory=dict, repr=False)

    def pixmaps(self, size: int) -> dict[str, QPixmap]:
        """The bundle's thumbnails scaled to ``size`` px by template id (made once per size and
        shared by every panel of the window)."""
        if size not in self._pixmaps:
            thumbs = self.bundle.thumbnails
            self._pixmaps[size] = {tid: thumbnail_pixmap(thumbs[i], size)
                                   for i, tid in enumerate(self.bundle.template_ids)
                                   if i < len(thumbs)}
        return self._pixmaps[size]


class Panel(Protocol):
    """One viewer panel: where it goes, how its widget is made, what it does with each frame.

    ``name`` is unique among the registered panels (the window's key for its widget);
    ``title`` names it to the user (the widget's accessible name); ``order`` sorts panels in
    the same slot (smaller first: left or top), ``stretch`` is its splitter stretch factor there.
    ``update`` runs on the GUI thread at ~30 fps: it must return quickly and do nothing when the
    frame holds nothing new for it.
    """

    name: str
    title: str
    slot: Slot
    order: int
    stretch: int

    def build(self, ctx: PanelContext) -> QWidget: ...

    def update(self, frame: Frame) -> None: ...


P = TypeVar("P", bound=type)

_REGISTRY: dict[str, type[Panel]] = {}
_discovered = False


def register_panel(cls: P) -> P:
    """Class decorator: the viewer windows opened from now on show this panel.

    A second class with a name already taken is an error (a re-import of the same class
    replaces it).
    """
    name = cls.name
    old = _REGISTRY.get(name)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__,
                                                                   cls.__qualname__):
        raise ValueError(f"panel name {name!r} is taken by {old.__module__}.{old.__qualname__}")
    _REGISTRY[name] = cls
    return cls


def unregister_panel(name: str) -> None:
    """Forget a registered panel (tests, embedding apps that want fewer panels)."""
    _REGISTRY.pop(name, None)


def discover_panels() -> None:
    """Import every module of ``neuralign.ui.panels`` once, so their panels register."""
    global _discovered
    if _discovered:
        return
    pkg = importlib.import_module(PANEL_PACKAGE)
    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{PANEL_PACKAGE}.{mod.name}")
    _discovered = True


def registered_panels() -> list[type[Panel]]:
    """The registered panel classes (after discovery) in layout order: slot, then order."""
    discover_panels()
    slots = list(Slot)
    return sorted(_REGISTRY.values(), key=lambda c: (slots.index(c.slot), c.order, c.name))
