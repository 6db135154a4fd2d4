"""``neuralign present``: show images full screen (or windowed) with one LSL marker per image,
stamped with the frame swap that showed it; ``--closed-loop`` repeats each image until the
engine is sure enough of it."""

from __future__ import annotations

import argparse
from pathlib import Path

from neuralign.errors import UserError


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return w, h


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``present``."""
    p = sub.add_parser(
        "present", help="present images with swap-stamped LSL markers (optionally closed loop)",
        description="PyQt6 stimulus presenter: images from a folder, a sequence CSV or a "
        "balanced random order, RSVP down to 100 ms SOA. Each shown image sends one string "
        "marker (its id) on an LSL stream of type Markers, stamped with the time of the frame "
        "swap that showed it; onsets fall on frame boundaries; dropped frames are counted. "
        "Space pauses, Esc aborts (the log is kept). docs/tutorials/closed_loop.md",
    )
    p.add_argument("--images", help="folder of images; the file name stem is the image id")
    p.add_argument("--sequence", help="CSV with columns image[, duration, isi | soa, jitter] "
                   "(milliseconds; a _s suffix means seconds)")
    p.add_argument("--repetitions", type=int,
                   help="each --images image this many times, shuffled (seeded) so no image "
                   "follows itself")
    p.add_argument("--seed", type=int, default=0, help="order and jitter seed (default 0)")
    p.add_argument("--duration", type=float, default=100.0,
                   help="default image duration, ms (default %(default)s)")
    p.add_argument("--soa", type=float, default=250.0,
                   help="default onset-to-onset interval, ms (default %(default)s)")
    p.add_argument("--isi", type=float, help="default blank after each image, ms (instead of "
                   "--soa)")
    p.add_argument("--jitter", type=float, default=0.0,
                   help="default uniform random extra SOA, ms (default 0)")
    p.add_argument("--marker-stream", default="neuralign-markers",
                   help="LSL name of the marker stream (default %(default)s)")
    p.add_argument("--log", help="per-image log: .jsonl for JSON lines, else CSV (a summary "
                   "JSON is written next to it)")
    p.add_argument("--windowed", action="store_true", help="a window instead of full screen")
    p.add_argument("--size", type=_size, default=(1024, 768),
                   help="window size with --windowed, WxH (default 1024x768)")
    p.add_argument("--image-size", type=int,
                   help="image box in pixels (default 60%% of the shorter screen side)")
    p.add_argument("--photodiode", nargs="?", const="corner",
                   choices=("corner", "top-left", "top-right", "bottom-left", "bottom-right"),
                   help="a square white on image frames and black otherwise for a photodiode "
                   "(corner = top-left, where the display's scan-out starts)")
    p.add_argument("--photodiode-size", type=int, default=40, help="patch side, px (default 40)")
    p.add_argument("--latency", type=float, default=0.0,
                   help="ms added to every marker stamp: the screen lag measured with a "
                   "photodiode (default 0)")
    p.add_argument("--timing", choices=("auto", "opengl", "raster"), default="auto",
                   help="how swaps are timed: OpenGL vsync (frameSwapped), or a raster window "
                   "flushed on a timer; auto = OpenGL when available (default)")
    p.add_argument("--refresh-hz", type=float,
                   help="the display's refresh rate (default: what the screen reports)")
    p.add_argument("--lead-in", type=float, default=1.0,
                   help="seconds of blank screen before the first image (default 1)")
    p.add_argument("--wait-for-consumers", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds for a reader (the engine, LabRecorder) of the "
                   "marker stream before starting")
    p.add_argument("--closed-loop", action="store_true",
                   help="repeat each image until the engine's accumulated top-1 posterior "
                   "reaches --threshold or --max-repetitions, interleaving images meanwhile")
    p.add_argument("--results", help="the engine's result stream, lsl:NAME (closed loop)")
    p.add_argument("--threshold", type=float,
                   help="stop an image at this top-1 posterior (default: what --bundle's "
                   "evaluation recommends, else 0.9)")
    p.add_argument("--bundle", help="a bundle or run directory (or its report.json) whose "
                   "evaluation recommends a threshold")
    p.add_argument("--max-repetitions", type=int, default=4,
                   help="closed loop: stop an image after this many presentations (default 4)")
    p.add_argument("--result-timeout", type=float, default=3.0,
                   help="closed loop: seconds to wait for a presentation's result; then it "
                   "counts as 'continue' (default 3)")
    p.add_argument("--max-active", type=int, default=8,
                   help="closed loop: images interleaved at most while results are on the way "
                   "(default 8)")
    p.add_argument("--max-duration", type=float,
                   help="stop after this many seconds (logged as an abort)")
    p.set_defaults(func=cmd_present)


def _trials(args: argparse.Namespace):
    from neuralign.ui.presenter.sequence import (
        Timing,
        find_images,
        folder_sequence,
        read_sequence,
        repeated_sequence,
    )

    soa = (args.duration + args.isi) if args.isi is not None else args.soa
    default = Timing(args.duration / 1e3, soa / 1e3, args.jitter / 1e3).check("defaults")
    images = find_images(Path(args.images)) if args.images else None
    if args.sequence:
        if args.repetitions:
            raise UserError("--repetitions: only with --images, not with --sequence")
        return read_sequence(Path(args.sequence), images, default)
    if images is None:
        raise UserError("give --images DIR or --sequence FILE")
    if args.repetitions and not args.closed_loop:
        return repeated_sequence(images, default, args.repetitions, args.seed)
    return folder_sequence(images, default)


def cmd_present(args: argparse.Namespace) -> int:
    """``neuralign present``: run the presentation, print the summary."""
    from neuralign.ui.display import headless_reason

    trials = _trials(args)
    threshold = args.threshold
    if threshold is None and args.bundle:
        from neuralign.ui.presenter.app import recommended_threshold

        threshold = recommended_threshold(Path(args.bundle))
        if threshold is not None:
            print(f"threshold {threshold:g}: recommended by the evaluation in {args.bundle}")
    if args.closed_loop and not args.results:
        raise UserError("--closed-loop needs --results lsl:NAME (the engine's result stream, "
                        "e.g. lsl:neuralign-results)")
    reason = headless_reason()
    if reason:
        raise UserError(f"cannot open a window: {reason}")
    from neuralign.ui.presenter.app import PresentOptions, run_presentation
    from neuralign.ui.presenter.stopping import DEFAULT_THRESHOLD

    photodiode = "top-left" if args.photodiode == "corner" else args.photodiode
    opts = PresentOptions(
        marker_stream=args.marker_stream, log_path=Path(args.log) if args.log else None,
        windowed=args.windowed, size=args.size, image_px=args.image_size, photodiode=photodiode,
        patch_px=args.photodiode_size, latency_ms=args.latency, timing=args.timing,
        refresh_hz=args.refresh_hz, lead_in_s=args.lead_in,
        wait_for_consumers_s=args.wait_for_consumers, seed=args.seed,
        closed_loop=args.closed_loop, results=args.results,
        threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
        max_repetitions=args.max_repetitions, result_timeout_s=args.result_timeout,
        max_active=args.max_active, max_duration_s=args.max_duration)
    try:
        summary, _ = run_presentation(trials, opts)
    except (ValueError, RuntimeError) as err:
        raise UserError(str(err)) from None
    for line in summary.lines():
        print(line)
    if args.log:
        print(f"log: {args.log}")
    return 130 if summary.aborted else 0
