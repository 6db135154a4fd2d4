"""Early encoding: an epoch's first frames go through the encoder while its last samples arrive.

Why: on the critical path - last sample in -> result out - a whole forward pass costs ~2 ms of
a 1 s epoch on a small CPU (and a 1024-channel one much more), although almost all of it depends
only on samples that came long before. TSConv's temporal convolution reads each output frame
from its own few samples, the spatial convolution and the ELUs act frame by frame and the head
is linear, so the head output is a sum over frames (:meth:`FoldedTSConvEncoder.head_part`). The
processing thread encodes each epoch's frames as their samples are filtered, from ``LEAD_S``
before its window ends, into a :class:`PartialEncoding`; when the epoch is complete only the
frames its last samples determine are left (one or two). Same embedding as one forward pass to
float tolerance, so the same decisions.

Its input must be what the complete epoch will be, column for column, which holds when the
noise normaliser is fixed (``online_update`` re-whitens during the epoch: off) and no channel is
reconstructed from the whole epoch first (``--fill-missing``: off); the engine checks both. The
average of an image's presentations is encoded early too, from the sum of the presentations
before it; when another presentation of the image is folded in meanwhile, the average row is
started again (and :class:`~neuralign.realtime.decisions.ResultBuilder` checks the count).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from neuralign.realtime.decisions import RepetitionStore, average
from neuralign.realtime.inference import PartialEncoding

if TYPE_CHECKING:
    from neuralign.realtime.epocher import Filling
    from neuralign.realtime.inference import Decoder

#: an epoch is encoded early from this long before its window ends: ~5 processing periods, so
#: the bulk runs once, well before the last sample, and each period after it adds a frame
LEAD_S = 0.1


class EarlyEncoder:
    """Keeps each filling epoch's :class:`PartialEncoding` up to date (the engine's pass)."""

    def __init__(self, decoder: Decoder, repetitions: RepetitionStore):
        if decoder.early_encoder is None:
            raise ValueError("this decoder's model cannot be encoded early")
        self.decoder = decoder
        self.repetitions = repetitions
        self.n_frames = 0  # frames encoded early, all epochs (instrumentation)

    def advance(self, fillings: Iterable[Filling], key: Callable[[str | None], str | None]
                ) -> None:
        """Encode the frames each epoch's samples now determine and it does not have yet.
        ``key``: the repetition-store key of a label in this stream (None: not averaged)."""
        for f in fillings:
            q = f.epoch
            j = self.decoder.frames_ready(f.n_cols)
            have = q.early
            k = key(q.label)
            n_prev, total = self.repetitions.peek(k) if k is not None else (0, None)
            n_before = n_prev if total is not None and n_prev >= 1 else None
            if have is not None and have.n_before != n_before:  # another presentation came in
                have = None
            j0 = 0 if have is None else have.n_frames
            if j <= j0:
                continue
            c0, c1 = self.decoder.frame_columns(j0, j)  # only what the new frames read
            x = f.read(c0, c1)
            rows = [x]
            if n_before is not None:
                rows.append(average(total[:, c0:c1] + x, n_before + 1))
            part = self.decoder.encode_part(np.stack(rows), j0, j, start=c0)
            q.early = PartialEncoding(j, part if have is None else have.acc + part, n_before)
            self.n_frames += j - j0
