"""Entry points the CLI calls: open a viewer over a feed, or over an LSL result stream.

Both create the ``QApplication`` only when none exists (tests and embedding apps own theirs) and
return the event loop's exit code. Ctrl+C in the terminal and SIGTERM (a service manager's stop)
close the window cleanly: Python only runs signal handlers between bytecodes, so a cheap timer
hands control back to Python regularly (a handler that raised instead would raise inside a Qt
slot, and the event loop would go on).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PyQt6.QtCore import QTimer
from PyQt6.QtWidgets import QApplication

from neuralign.ui.feeds import Feed, LSLResultFeed
from neuralign.ui.viewer import ViewerWindow

log = logging.getLogger(__name__)


def _application() -> QApplication:
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
        app.setApplicationName("neuralign viewer")
    return app


def run_viewer(feed: Feed, owns=None, stop_when: Callable[[], bool] | None = None,
               **window_kw) -> int:
    """Show a :class:`ViewerWindow` over ``feed`` and run the Qt event loop until it closes.

    ``owns``: what closing the window stops besides the feed's threads: ``True`` or the feed's
    source itself (:meth:`Feed.is_source`, e.g. the engine of ``neuralign run`` without
    ``--headless``) = the source, via :meth:`Feed.stop_source`; any other object with ``stop()``
    or a sequence of them (e.g. ``[engine, replayer]``) = stopped in that order. ``None`` =
    nothing.
    ``stop_when``: asked five times a second; the window closes once it returns True (e.g. the
    engine failed: a window over a dead engine must not keep the process alive).
    """
    app = _application()
    owned: list = []
    owns_source = False
    items = owns if isinstance(owns, (list, tuple)) else ([] if owns in (None, False) else [owns])
    for o in items:
        if o is True or feed.is_source(o):
            owns_source = True
        else:
            owned.append(o)
    win = ViewerWindow(feed, owns_source=owns_source, owned=owned, **window_kw)
    win.show()
    signalled = threading.Event()  # a stop signal came (maybe before the loop ran)

    def on_signal(signum: int, frame: object) -> None:  # no I/O here: it may interrupt a write
        signalled.set()
        win.close()

    previous: dict[int, Any] = {}  # the handlers to restore
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)

    def pump_tick() -> None:  # lets Python run the signal handlers
        if signalled.is_set() or (stop_when is not None and stop_when()):
            if win.isVisible():
                win.close()  # the last window: the loop ends
            else:  # closed before the loop started: nothing else would end it
                app.quit()

    pump = QTimer()
    pump.timeout.connect(pump_tick)
    pump.start(200)
    try:
        code = app.exec()
    finally:
        pump.stop()
        win.shutdown()  # also when the loop ended another way (app.quit())
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return int(code)


def view_lsl(result_stream: str | None, bundle_dir: Path, timeout: float = 5.0,
             owns: Sequence = (), source_id: str | None = None,
             announce: Callable[[str], None] | None = None) -> int:
    """``neuralign view``: show an engine's LSL result stream, selected by name and/or
    source_id, with its bundle.

    The bundle supplies thumbnails and the template ids that make accuracy computable. A missing
    bundle or stream raises the usual one-line ``DataError`` / ``UserError`` before any window
    opens. ``announce`` gets one line naming the engine followed (and any other engine that
    publishes the same name), which the window title shows too.
    """
    from neuralign.bundle import load_bundle

    bundle = load_bundle(Path(bundle_dir))
    feed = LSLResultFeed(result_stream, bundle, source_id=source_id, timeout=timeout)
    feed.start()
    if announce is not None:
        announce(feed.following())
    return run_viewer(feed, owns=list(owns) or None)
