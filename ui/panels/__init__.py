"""The viewer's panels: live traces, stimulus + retrieved images, masked-channel reconstruction,
generated image.

Every panel is fed from the GUI thread with data the feed already copied; each ``show_*`` method
returns quickly and does nothing when its input did not change, because it runs on a 30 fps timer
next to an engine that must not be starved of CPU (2 cores). One module per panel (widget and its
:func:`~neuralign.ui.panels.registry.register_panel` entry): the window lays out whatever the
modules of this package register, so a new panel is one new module here. The widget names are
re-exported so ``from neuralign.ui.panels import X`` is the one import path.
"""

from neuralign.ui.panels.common import (
    color_text,
    pearson_r,
    static_plot,
    thumbnail_pixmap,
    unavailable_label,
)
from neuralign.ui.panels.registry import (
    Panel,
    PanelContext,
    Slot,
    register_panel,
    registered_panels,
    unregister_panel,
)
from neuralign.ui.panels.sensors import MaskPanel, reconstruction_amplitude_label, sensor_positions
from neuralign.ui.panels.stimulus import STIM_PX, TILE_PX, StimulusPanel, ThumbTile
from neuralign.ui.panels.traces import BAD_PEN, GOOD_PEN, ChannelDialog, TracePanel

__all__ = [
    "BAD_PEN",
    "GOOD_PEN",
    "STIM_PX",
    "TILE_PX",
    "ChannelDialog",
    "MaskPanel",
    "Panel",
    "PanelContext",
    "Slot",
    "StimulusPanel",
    "ThumbTile",
    "TracePanel",
    "color_text",
    "pearson_r",
    "reconstruction_amplitude_label",
    "register_panel",
    "registered_panels",
    "sensor_positions",
    "static_plot",
    "thumbnail_pixmap",
    "unavailable_label",
    "unregister_panel",
]
