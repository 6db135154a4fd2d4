"""What the commands print about results: the evaluation report, engine status, live accuracy.

Kept apart from the commands so ``evaluate`` and the demo print a report the same way, and the
command modules stay a thin layer over the library.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neuralign.realtime.engine import Engine
    from neuralign.realtime.replay.session import ReplaySession


def print_report(rep: dict, path: str | Path) -> None:
    """The headline numbers of an evaluation report (``evaluate_run``) and where it is."""
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
    for flag in rep.get("vs_ridge", {}).get("worse", []):
        v = rep["vs_ridge"]["metrics"][flag]
        print(f"WARNING: {flag} significantly below ridge: {v['model']:.3f} vs {v['ridge']:.3f} "
              f"(difference 95 % CI {v['difference_ci'][0]:+.3f}..{v['difference_ci'][1]:+.3f})")
    print(f"report: {path}")


def print_engine_status(engine: Engine, final: bool = False) -> None:
    """One status line of a running engine (``neuralign run``): decoded, latency, stream health."""
    st = engine.status()
    lat = st["latency_ms"].get("engine_total", {})
    lat_txt = (f"engine latency p50 {lat['p50']:.1f} ms / p99 {lat['p99']:.1f} ms"
               if lat else "no epochs yet")
    print(f"{'final: ' if final else ''}decoded {st['decoded']}, {lat_txt}, received "
          f"{st['received']} samples, dropped {st['dropped']}, gaps {st['gaps']}, "
          f"reconnects {st['reconnects']}")


def print_live_accuracy(session: ReplaySession, final: bool = False) -> None:
    """One line of a replay session (the demo): running accuracy against the truth, latency."""
    acc = session.accuracy()
    lat = session.engine.stats.summary().get("engine_total", {})
    txt = f"  {'final: ' if final else ''}decoded {session.engine.n_decoded}/{session.n_trials}"
    if acc.get("n"):
        txt += (f", single-trial top-1 {acc['top1']:.2f} top-5 {acc['top5']:.2f} "
                f"(chance {acc['chance_top1']:.2f})")
        if "avg_top1" in acc:
            txt += f", averaged ({acc['avg_n_repetitions']} reps) top-1 {acc['avg_top1']:.2f}"
    if lat:
        txt += f", engine latency p50 {lat['p50']:.1f} / p99 {lat['p99']:.1f} ms"
    print(txt)
