"""``replay``, ``run``, ``view``: thin layers over ``neuralign.realtime`` and ``neuralign.ui``."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from neuralign.cli.common import add_config_args, config_from_args
from neuralign.cli.report import print_engine_status
from neuralign.errors import UserError

if TYPE_CHECKING:
    from neuralign.bundle import Bundle
    from neuralign.realtime.decisions import RunningAccuracy
    from neuralign.realtime.engine import Engine
    from neuralign.realtime.subscriptions import Subscription


def show_in_viewer(engine: Engine, bundle: Bundle, stop: Callable[[], None]) -> None:
    """Open the Qt viewer on a running engine in this process; ``stop`` runs when it closes, so
    closing the window (or an error in it) never leaves the engine running. SIGTERM / Ctrl-C
    close the window, and so does an engine error (``engine.error``: the caller reports it);
    a second signal while ``stop`` closes the recording waits, as headless."""
    main = threading.current_thread() is threading.main_thread()
    requested = threading.Event()
    if main:  # from here on a signal is a request to close, never an exception inside Qt
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: requested.set())
    try:
        from neuralign.ui.app import run_viewer
        from neuralign.ui.feeds import EngineFeed

        run_viewer(EngineFeed(engine, bundle),
                   stop_when=lambda: requested.is_set() or engine.error is not None)
    finally:
        if main:
            _ignore_stop_signals()
        stop()


def follow_results(results: Subscription, accuracy: RunningAccuracy, verbose: bool = False,
                   reported: int = 0) -> int:
    """Score (with ``verbose`` also print) the results waiting in ``results``; returns how many
    it dropped so far, to pass as ``reported`` next time. Results it dropped because this loop
    fell more than ``results.maxlen`` behind are said, not skipped silently."""
    got = results.drain()
    if results.dropped > reported:
        print(f"  {results.dropped - reported} results not scored: this reader fell more than "
              f"{results.maxlen} results behind")
    accuracy.extend(got)
    if verbose:
        for r in got:
            print(f"  {r.summary()}")
    return results.dropped


def _exit_code(engine: Engine) -> int:
    """0 unless the engine failed: then one line (a UserError as the usual exit 2, anything
    else exit 1), with or without the viewer."""
    if engine.error is None:
        return 0
    if isinstance(engine.error, UserError):
        raise UserError(f"engine stopped: {engine.error}")
    print(f"neuralign: error: engine stopped: {engine.error!r} (exit code 1)", file=sys.stderr)
    return 1


# 'neuralign run' flags that are spellings of realtime config keys (validated by the schema)
RUN_FLAGS = {"source": "realtime.source", "markers": "realtime.markers",
             "batch_size": "realtime.batch_size", "max_wait_ms": "realtime.max_wait_ms",
             "top_k": "realtime.top_k", "fill_missing": "realtime.fill_missing",
             "torch_threads": "realtime.torch_threads",
             "result_name": "realtime.result_stream_name",
             "result_source_id": "realtime.result_source_id", "units": "realtime.units",
             "clock_sync": "realtime.clock_sync", "priority": "realtime.scheduling.priority"}


def _stop_on_sigterm() -> None:
    """SIGTERM stops ``neuralign run`` like Ctrl-C: the engine stops and the recording is closed
    complete (a service manager's stop must not leave a half-written recording). SIGINT is set
    explicitly too: a process started in the background by a non-interactive shell (``cmd &``,
    nohup, some CI runners) inherits SIGINT *ignored*, and Python then installs no Ctrl-C handler,
    so ``kill -INT`` would leave the engine running."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _ignore_stop_signals() -> None:
    """While the engine stops and the recording closes, a second Ctrl-C / SIGTERM waits."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def cmd_run(args: argparse.Namespace) -> int:
    """``neuralign run``: decode a live source until stopped (viewer, or status lines headless)."""
    from neuralign.bundle import load_bundle
    from neuralign.realtime.decisions import RunningAccuracy
    from neuralign.realtime.engine import Engine
    from neuralign.realtime.sources.factory import open_source

    rt = config_from_args(args, RUN_FLAGS).realtime
    if not rt.source:
        raise UserError("--source: required (or set realtime.source in the config), "
                        "e.g. --source lsl:EEG")
    headless = args.headless
    if not headless:
        from neuralign.ui.display import headless_reason

        reason = headless_reason()
        if reason:
            print(f"{reason}. Running headless.")
            headless = True
    _stop_on_sigterm()
    bundle = load_bundle(Path(args.bundle))
    source = open_source(rt.source, rt.markers, rt, speed=args.speed)
    engine = Engine(bundle, source, rt, device=args.device)
    desc = source.open()
    if args.record:
        from neuralign.realtime.recorder import Recorder

        engine.recorder = Recorder.for_stream(Path(args.record), desc)
    # headless: every result scored, so subscribed before the start (the viewer subscribes itself)
    results = engine.subscribe() if headless else None
    try:
        engine.start()
    except BaseException:  # a bad stream or a stop signal: close what was opened, record intact
        _ignore_stop_signals()
        engine.stop()
        raise
    print(f"Decoding '{desc.name}' ({len(desc.ch_names)} ch @ {desc.sfreq:g} Hz) with "
          f"{args.bundle}. Ctrl-C to stop.")
    if engine.outlet is not None:
        print(f"Results on LSL stream '{engine.outlet.name}', source_id {engine.outlet.source_id} "
              f"(neuralign view --bundle {args.bundle} --result-source-id "
              f"{engine.outlet.source_id})")
    if not headless:
        show_in_viewer(engine, bundle, engine.stop)
        print_engine_status(engine, final=True)
        return _exit_code(engine)
    accuracy = RunningAccuracy(bundle.template_ids)
    t0 = time.monotonic()
    next_status = t0 + args.status_every
    dropped = 0
    try:
        while engine.error is None:
            time.sleep(0.1)
            dropped = follow_results(results, accuracy, args.verbose_results, dropped)
            now = time.monotonic()
            if now >= next_status:
                print_engine_status(engine, accuracy=accuracy)
                next_status += args.status_every
            if (args.n_epochs and engine.n_decoded >= args.n_epochs) or (
                    args.duration and now - t0 >= args.duration):
                break
    except KeyboardInterrupt:
        print("stopping ...")
    finally:
        _ignore_stop_signals()
        engine.stop()
    follow_results(results, accuracy, args.verbose_results, dropped)
    results.close()
    print_engine_status(engine, final=True, accuracy=accuracy)
    return _exit_code(engine)


def cmd_view(args: argparse.Namespace) -> int:
    """``neuralign view``: the viewer of an engine running in another process (via LSL)."""
    from neuralign.ui.display import headless_reason

    bundle = Path(args.bundle)
    if not bundle.is_dir():
        raise UserError(f"--bundle: {bundle}: not a bundle directory")
    reason = headless_reason()
    if reason:
        raise UserError(f"cannot open the viewer: {reason}")
    from neuralign.ui.app import view_lsl

    return int(view_lsl(args.result_name, bundle, source_id=args.result_source_id,
                        announce=print) or 0)


def cmd_replay(args: argparse.Namespace) -> int:
    """``neuralign replay``: a recording as LSL data + marker streams any client can read."""
    import uuid

    from neuralign.offline.timelines import load_timeline
    from neuralign.realtime.replay import LSLReplayer, get_profile

    timing = None
    if args.timing is not None:
        try:
            timing = get_profile(args.timing)
        except KeyError as exc:
            raise UserError(f"--timing: {exc.args[0]}") from None
    tl = load_timeline(Path(args.path), soa=args.soa, split=args.split)
    data, names, types = tl.data, tl.ch_names, tl.ch_types
    if args.picks:
        wanted = [c.strip() for c in args.picks.split(",") if c.strip()]
        missing = [c for c in wanted if c not in names]
        if missing:
            raise UserError(f"--picks: channels {missing} are not in {args.path}")
        idx = [names.index(c) for c in wanted]
        data, names, types = data[idx], wanted, [types[i] for i in idx]
    start = int(round(args.start * tl.sfreq))
    if start >= data.shape[1]:
        raise UserError(f"--start: {args.start} s is past the end ({data.shape[1] / tl.sfreq:.1f} s)")
    data = data[:, start:]
    events = [(o - start, lab) for o, lab in tl.events if o >= start]
    sid = args.source_id or uuid.uuid4().hex
    speed = float("inf") if args.speed <= 0 else args.speed
    rep = LSLReplayer(data, tl.sfreq, names, types, events=events, name=args.name,
                      stype=args.type, source_id=sid, marker_name=args.marker_name,
                      chunk_size=args.chunk_size, speed=speed, loop=args.loop,
                      wait_for_consumers=args.wait, timing=timing, timing_seed=args.timing_seed)
    rep.start()
    print(f"Replaying {tl.description}: {len(names)} ch @ {tl.sfreq:g} Hz, {len(events)} events, "
          f"{data.shape[1] / tl.sfreq:.1f} s at speed {args.speed:g}{' (looping)' if args.loop else ''}")
    print(f"  data stream '{args.name}' (type {args.type}, source_id {sid}); markers "
          f"'{rep.marker_name}' (type Markers). Ctrl-C to stop.")
    try:
        while not rep.wait_done(0.5):
            pass
        if rep.error is not None:
            raise UserError(f"replay failed: {rep.error}")
        print(f"done: {rep.n_sent} samples sent"
              + (f", {rep.n_dropped} lost (timing {args.timing})" if timing is not None else ""))
        time.sleep(0.5)  # the outlets stay a moment: consumers receive the last chunks first
    except KeyboardInterrupt:
        print("stopping ...")
    finally:
        rep.stop()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the online subcommands (in the order ``neuralign --help`` lists them)."""
    p = sub.add_parser(
        "replay", help="replay a recording or dataset as LSL streams (data + Markers)",
        description="Stream a .fif/.edf/.bdf/.vhdr/.set/.xdf recording, a THINGS-EEG2 file or a "
        "neuralign recording over LSL (local host by default), with a marker stream.",
    )
    p.add_argument("path", help="recording (.fif/.edf/.bdf/.vhdr/.set/.xdf), THINGS-EEG2 "
                   "raw_eeg_*.npy / preprocessed_eeg_*.npy, TVSD .mat, or a neuralign recording dir")
    p.add_argument("--name", default="neuralign-replay", help="LSL data stream name")
    p.add_argument("--type", default="EEG", help="LSL stream type (EEG, MEG, ...)")
    p.add_argument("--source-id", help="LSL source_id (default: a new uuid)")
    p.add_argument("--marker-name", help="marker stream name (default: NAME-markers)")
    p.add_argument("--chunk-size", type=int, default=10,
                   help="samples per pushed chunk (with --timing: ideal only)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="1 = real time, 4 = four times faster, 0 = as fast as possible")
    p.add_argument("--loop", action="store_true", help="start again at the end (timestamps go on)")
    p.add_argument("--start", type=float, default=0.0, help="start offset in seconds")
    p.add_argument("--picks", help="comma-separated channel subset")
    p.add_argument("--soa", type=float, help="epoched datasets: seconds between stitched trials")
    p.add_argument("--split", choices=["train", "test"], default="test",
                   help="TVSD: which split to stitch")
    p.add_argument("--wait", type=float, default=0.0,
                   help="wait up to this many seconds for a consumer before sending")
    p.add_argument("--timing", metavar="PROFILE",
                   help="stamp and deliver like a real device: ideal, wired-1khz, cyton-dongle, "
                   "consumer-256 or brainflow (jittered chunk stamps, bursts, clock drift, lost "
                   "samples; docs/timing_profiles.md). Default: exact t0 + k/sfreq stamps in "
                   "--chunk-size chunks; with a profile its own packet sizes apply (ideal: "
                   "--chunk-size)")
    p.add_argument("--timing-seed", type=int, default=0,
                   help="seed of the --timing draws (the same seed replays the same timing)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "run", help="decode a live stream with a model bundle",
        description="Read LSL / BrainFlow / file sources, filter causally, decode in "
        "fixed-latency batches, publish results on LSL. Every option below that names a "
        "realtime.* key overrides that key of --config (or of the defaults).",
    )
    add_config_args(p, default=None)
    p.add_argument("--bundle", required=True, help="model bundle directory ('neuralign export')")
    # written from the registered source kinds (realtime/sources/kind_*.py; light imports)
    from neuralign.realtime.sources.registry import markers_help, source_help

    p.add_argument("--source", help=source_help())
    p.add_argument("--markers", help=markers_help())
    p.add_argument("--record", help="record raw input, events and results to this directory")
    p.add_argument("--headless", action="store_true",
                   help="no viewer (default: open the Qt viewer in this process); print status "
                   "lines with running accuracy")
    p.add_argument("--fill-missing", action="store_true", default=None,
                   help="reconstruct a few missing channels with the model instead of refusing "
                   "(realtime.fill_missing)")
    p.add_argument("--priority", choices=("auto", "normal", "high", "realtime"),
                   help="the engine's acquisition, processing and inference threads (and "
                   "liblsl's for its inlets and outlet): high = nice -10, realtime = "
                   "SCHED_FIFO; both need CAP_SYS_NICE or an rtprio limit and fall back to "
                   "normal with a warning; auto = the highest of them the OS grants, for one live "
                   "stream (realtime.scheduling.priority, default auto; docs/latency_tail.md "
                   "has the measured effect)")
    p.add_argument("--clock-sync", choices=("auto", "lsl", "none"),
                   help="LSL clock synchronisation of the data and marker streams: auto = only "
                   "for streams from another host (default), lsl = always, none = never "
                   "(realtime.clock_sync)")
    p.add_argument("--units",
                   help="the LSL stream's unit (V, mV, uV, nV, T, fT), overriding its channel "
                   "metadata; by default read from desc/channels/channel/unit and converted to "
                   "volts, an unknown unit refused (realtime.units)")
    p.add_argument("--batch-size", type=int,
                   help="fixed inference batch shape (realtime.batch_size, default 4)")
    p.add_argument("--max-wait-ms", type=float,
                   help="deadline: the longest an epoch waits for its batch "
                   "(realtime.max_wait_ms, default 20)")
    p.add_argument("--top-k", type=int,
                   help="retrieved images per decoded epoch, best first (realtime.top_k, default 5)")
    p.add_argument("--torch-threads", type=int,
                   help="torch threads of the inference thread (realtime.torch_threads, default 1)")
    p.add_argument("--result-name",
                   help="LSL name of the result stream (realtime.result_stream_name, default "
                   "neuralign-results)")
    p.add_argument("--result-source-id",
                   help="LSL source_id of the result stream, so 'neuralign view "
                   "--result-source-id' finds this engine (realtime.result_source_id; default: "
                   "a new random id, printed at start)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="file: sources: replay speed factor (default %(default)s)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the model runs: auto = cuda when available, else cpu "
                   "(default %(default)s)")
    p.add_argument("--duration", type=float,
                   help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--n-epochs", type=int,
                   help="stop after this many decoded epochs (default: no limit)")
    p.add_argument("--status-every", type=float, default=5.0,
                   help="seconds between status lines (default %(default)s)")
    p.add_argument("--verbose-results", action="store_true", help="print every decoded epoch")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "view", help="open the Qt viewer of a running engine",
        description="PyQt6 + pyqtgraph viewer of an engine's LSL result stream (top-k images, "
        "running accuracy, latency). For live traces and masked-channel reconstruction, run "
        "the engine with the viewer in one process: 'neuralign run ...' without --headless. "
        "Several engines on one host: pick one by the source_id 'neuralign run' prints.",
    )
    p.add_argument("--bundle", required=True, help="the bundle the engine runs (for thumbnails)")
    p.add_argument("--result-name", "--stream", dest="result_name", default="neuralign-results",
                   help="result stream name (default %(default)s)")
    p.add_argument("--result-source-id",
                   help="result stream source_id (printed by 'neuralign run'): selects one engine "
                   "when several publish the same name")
    p.set_defaults(func=cmd_view)
