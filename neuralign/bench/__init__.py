"""``neuralign bench``: one module per measurement, found by :func:`measurements`.

Why: a new measurement is one new file here. A module of this package whose name does not start
with ``_`` defines ``MEASUREMENT``, a :class:`Measurement` (its name, help, options and run
function); ``neuralign bench <name>`` is built from it. The measurements'
implementations stay where their layer is (``neuralign.realtime.bench``, ``neuralign.offline``);
these modules are the command-line glue, importing them lazily so ``neuralign --help`` stays
instant.

A new measurement, ``neuralign/bench/warmup.py``::

    import argparse

    from neuralign.bench._base import Measurement


    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bundle", required=True, help="bundle to load")


    def run(args: argparse.Namespace) -> int:
        from neuralign.realtime.bench.warmup import time_first_forward  # the implementation

        print(f"first forward: {time_first_forward(args.bundle):.1f} ms")
        return 0


    MEASUREMENT = Measurement(
        name="warmup", help="time to the first decoded epoch",
        description="Load a bundle and time its first forward.",
        add_arguments=add_arguments, run=run)
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil

from neuralign.bench._base import Measurement

__all__ = ["Measurement", "measurements", "register"]


def measurements() -> list[Measurement]:
    """Every measurement module's ``MEASUREMENT``, in ``neuralign bench --help`` order."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        measurement = getattr(module, "MEASUREMENT", None)
        if not isinstance(measurement, Measurement):
            raise TypeError(f"{module.__name__}: expected MEASUREMENT = Measurement(...)")
        found.append(measurement)
    names = [m.name for m in found]
    if len(set(names)) != len(names):
        raise ValueError(f"two bench measurements share a name: {sorted(names)}")
    return sorted(found, key=lambda m: (m.order, m.name))


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` and one subcommand per measurement, each with its own options."""
    bench = sub.add_parser(
        "bench", help="measure training throughput, the engine's latency, or fidelity",
        description="One subcommand per measurement; 'neuralign bench <what> --help' lists its "
        "options.",
    )
    bench.set_defaults(func=lambda _args: (bench.print_help(), 0)[1])
    what = bench.add_subparsers(dest="what", metavar="<what>")
    for m in measurements():
        p = what.add_parser(m.name, help=m.help, description=m.description)
        m.add_arguments(p)
        p.set_defaults(func=m.run)
