"""The viewer's panels: live traces, stimulus + retrieved images, masked-channel reconstruction.

Every panel is fed from the GUI thread with data the feed already copied; each ``show_*`` method
returns quickly and does nothing when its input did not change, because it runs on a 30 fps timer
next to an engine that must not be starved of CPU (2 cores). One module per widget family; the
names are re-exported here so ``from neuralign.ui.panels import X`` is the one import path.
"""

from neuralign.ui.panels.common import (
    color_text,
    pearson_r,
    static_plot,
    thumbnail_pixmap,
    unavailable_label,
)
from neuralign.ui.panels.sensors import MaskPanel, sensor_positions
from neuralign.ui.panels.stimulus import STIM_PX, TILE_PX, StimulusPanel, ThumbTile
from neuralign.ui.panels.traces import BAD_PEN, GOOD_PEN, ChannelDialog, TracePanel

__all__ = [
    "BAD_PEN",
    "GOOD_PEN",
    "STIM_PX",
    "TILE_PX",
    "ChannelDialog",
    "MaskPanel",
    "StimulusPanel",
    "ThumbTile",
    "TracePanel",
    "color_text",
    "pearson_r",
    "sensor_positions",
    "static_plot",
    "thumbnail_pixmap",
    "unavailable_label",
]
