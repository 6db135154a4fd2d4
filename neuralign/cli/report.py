"""What the commands print about results: the evaluation report, engine status, live accuracy.

Kept apart from the commands so ``evaluate`` and the demo print a report the same way, and the
command modules stay a thin layer over the library.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neuralign.realtime.decisions import RunningAccuracy
    from neuralign.realtime.engine import Engine
    from neuralign.realtime.replay.session import ReplaySession


def print_report(rep: dict, path: str | Path) -> None:
    """The headline numbers of an evaluation report (``evaluate_run``) and where it is."""
    if "per_subject" in rep:  # pretrained on several subjects: each through its own layer
        for name, one in rep["per_subject"].items():
            r = one["retrieval"]
            print(f"subject {name}: zero-shot retrieval top-1 "
                  f"{r['top1']:.3f}, top-5 {r['top5']:.3f} (chance {r['chance_top1']:.3f})")
        m = rep["mean_over_subjects"].get("retrieval", {})
        if m:
            print(f"mean over {len(rep['per_subject'])} subjects: top-1 {m['top1']:.3f}, top-5 "
                  f"{m['top5']:.3f}")
        print(f"report: {path}")
        return
    r, ridge = rep["retrieval"], rep.get("ridge", {})
    print(f"{rep['n_test_images']}-way zero-shot retrieval: top-1 {r['top1']:.3f}, top-5 "
          f"{r['top5']:.3f} (chance {r['chance_top1']:.3f})")
    if "classification" in rep:
        c = rep["classification"]
        print(f"{c['n_way']}-way classification: top-1 {c['top1']:.3f}, top-5 {c['top5']:.3f}")
    if ridge:
        print(f"ridge decoding retrieval: top-1 {ridge['retrieval']['top1']:.3f}, top-5 "
              f"{ridge['retrieval']['top5']:.3f}")
    if "encoding" in rep:
        e = rep["encoding"]
        print(f"encoding Pearson r: all {e['pearson_r_all']:.3f}, visual {e['pearson_r_visual']:.3f}"
              + (f" (ridge: {ridge['encoding']['pearson_r_all']:.3f} / "
                 f"{ridge['encoding']['pearson_r_visual']:.3f}; mean training response: "
                 f"{ridge['mean_response']['encoding']['pearson_r_all']:.3f} / "
                 f"{ridge['mean_response']['encoding']['pearson_r_visual']:.3f})" if ridge else ""))
        if "encoding_raw_decoder" in rep:
            raw = rep["encoding_raw_decoder"]
            print(f"  decoder output before calibration: all {raw['pearson_r_all']:.3f}, "
                  f"visual {raw['pearson_r_visual']:.3f}")
        if "encoding_vs_ridge" in rep:
            v = rep["encoding_vs_ridge"]["visual"]
            print(f"  vs ridge, visual, per image: mean difference {v['mean_difference']:+.3f}, better on "
                  f"{v['images_better']:.0%} of images, Wilcoxon p {v['wilcoxon_p']:.2g}")
        if "pearson_r_across_images_visual" in e:
            print(f"encoding r across images (image-specific part), visual: "
                  f"{e['pearson_r_across_images_visual']:.3f}"
                  + (f" (ridge: {ridge['encoding']['pearson_r_across_images_visual']:.3f})"
                     if ridge else ""))
    if "closed_loop" in rep:
        print_closed_loop(rep["closed_loop"])
    for flag in rep.get("vs_ridge", {}).get("worse", []):
        v = rep["vs_ridge"]["metrics"][flag]
        print(f"WARNING: {flag} significantly below ridge: {v['model']:.3f} vs {v['ridge']:.3f} "
              f"(difference 95 % CI {v['difference_ci'][0]:+.3f}..{v['difference_ci'][1]:+.3f})")
    print(f"report: {path}")


def print_closed_loop(cl: dict) -> None:
    """Calibration, fixed-repetition and dynamic-stopping ITR lines of an evaluation report."""
    c = cl["calibration"]
    t_r = ", ".join(f"{t:.3f}" for t in cl.get("repetition_temperatures") or [])
    print(f"calibration (T {cl['temperature']:.3f}"
          + (f"; per repetition count T_r {t_r}" if t_r else "")
          + " fitted on validation trials): ECE "
          f"validation {c['validation_single_trial']['ece']:.3f}, test single-trial "
          f"{c['test_single_trial']['ece']:.3f}, test accumulated "
          f"{c['test_accumulated']['ece']:.3f}")
    print(f"ITR ({cl['n_candidates']} candidates, SOA {cl['soa_s']} s), fixed repetitions: "
          + "; ".join(f"{f['n_repetitions']}: top-1 {f['accuracy']:.3f} "
                      f"{f['bits_per_min']:.1f} bits/min" for f in cl["fixed"]))
    r = cl["dynamic_stopping"]["recommended"]
    print(f"dynamic stopping (p >= {r['threshold']}, max {r['max_reps']}, chosen on validation): "
          f"top-1 {r['accuracy']:.3f} with {r['mean_presentations']:.2f} presentations "
          f"({r['presentations_saved']:.0%} fewer; fixed {r['max_reps']}: "
          f"{r['fixed_accuracy']:.3f}), {r['bits_per_min']:.1f} bits/min")


def accuracy_text(acc: dict) -> str:
    """Running accuracy (:meth:`RunningAccuracy.summary`) as the status lines print it; empty
    before any result whose true image is known."""
    if not acc.get("n"):
        return ""
    txt = (f"single-trial top-1 {acc['top1']:.2f} top-5 {acc['top5']:.2f} "
           f"(chance {acc['chance_top1']:.2f}, n {acc['n']})")
    if "avg_top1" in acc:
        txt += f", averaged ({acc['avg_n_repetitions']} reps) top-1 {acc['avg_top1']:.2f}"
    if "itr_bits_per_min" in acc:
        txt += (f", ITR {acc['itr_bits_per_min']:.1f} bits/min ({acc['n_candidates']} images, "
                f"{acc['presentations_per_s']:.1f} presentations/s)")
    return txt


def print_engine_status(engine: Engine, final: bool = False,
                        accuracy: RunningAccuracy | None = None) -> None:
    """One status line of a running engine (``neuralign run``): decoded, running accuracy when
    markers carry the true image, latency, stream health."""
    st = engine.status()
    lat = st["latency_ms"].get("engine_total", {})
    lat_txt = (f"engine latency p50 {lat['p50']:.1f} ms / p99 {lat['p99']:.1f} ms"
               if lat else "no epochs yet")
    acc = accuracy_text(accuracy.summary()) if accuracy is not None else ""
    print(f"{'final: ' if final else ''}decoded {st['decoded']}, {acc + ', ' if acc else ''}"
          f"{lat_txt}, received {st['received']} samples, dropped {st['dropped']}, gaps "
          f"{st['gaps']}, reconnects {st['reconnects']}{health_text(st)}")


#: health counters named in the status line when non-zero (failures never look healthy)
_HEALTH_WORDS = {"non_finite_samples": "non-finite samples", "railed_samples": "railed samples",
                 "flagged_epochs": "flagged epochs", "bad_epochs_dropped": "bad epochs dropped",
                 "gap_epochs_dropped": "epochs across gaps dropped",
                 "lost_samples": "samples lost in engine",
                 "unknown_markers": "unknown markers", "bad_markers": "bad markers",
                 "deferred_markers_dropped": "unplaceable markers dropped",
                 "epochs_outside_buffer": "epochs outside buffer",
                 "ready_dropped": "epochs dropped (inference behind)",
                 "acquisition_errors": "acquisition errors",
                 "markers_dropped": "markers dropped (engine behind)",
                 "ignored_marker_values": "extra marker channel values ignored",
                 "marker_reconnects": "marker stream reconnects",
                 "viewer_dropped": "results dropped by the viewer",
                 "recorder_write_errors": "recorder write errors"}


def health_text(st: dict) -> str:
    """``, <count> <what>, ...`` for each non-zero health counter, the last error and whether
    the stream is down (empty when all is well)."""
    h = st.get("health") or {}
    parts = [f"{h[k]} {w}" for k, w in _HEALTH_WORDS.items() if h.get(k)]
    if st.get("markers_connected") is False:
        parts.append("marker stream lost")
    if not st.get("data_connected", st.get("connected", True)):
        parts.append("NOT CONNECTED")
    if h.get("last_error"):
        parts.append(f"last error: {str(h['last_error'])[:120]}")
    if h.get("unit_warning"):  # whole: it names the mistake and the fix
        parts.append(f"UNITS: {h['unit_warning']}")
    if st.get("error"):
        parts.append(f"ENGINE STOPPED: {str(st['error'])[:120]}")
    return "".join(f", {p}" for p in parts)


def print_live_accuracy(session: ReplaySession, final: bool = False) -> None:
    """One line of a replay session (the demo): running accuracy against the truth, latency."""
    acc = accuracy_text(session.accuracy())
    lat = session.engine.stats.summary().get("engine_total", {})
    txt = f"  {'final: ' if final else ''}decoded {session.engine.n_decoded}/{session.n_trials}"
    if acc:
        txt += f", {acc}"
    if lat:
        txt += f", engine latency p50 {lat['p50']:.1f} / p99 {lat['p99']:.1f} ms"
    print(txt)
