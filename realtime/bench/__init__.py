"""``neuralign bench latency``: the engine vs the naive mne-lsl pipeline vs the machine's floor,
measured in one run on real LSL streams (:mod:`.run`; helper processes in :mod:`.procs`)."""

from neuralign.realtime.bench.run import (
    BenchConfig,
    format_report,
    latency_benchmark,
    plot_report,
    sweep,
)

__all__ = ["BenchConfig", "format_report", "latency_benchmark", "plot_report", "sweep"]
