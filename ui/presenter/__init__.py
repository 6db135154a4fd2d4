"""``neuralign present``: a stimulus presenter whose markers carry the time of the frame swap.

Qt-free logic (:mod:`.sequence`, :mod:`.stopping`, :mod:`.session`, :mod:`.closed_loop`,
:mod:`.markers`) is kept apart from the window (:mod:`.window`) so it is unit-tested without a
display; the window only paints, swaps and stamps.
"""
