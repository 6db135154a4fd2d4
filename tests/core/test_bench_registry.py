"""``neuralign bench``: every measurement module registers its subcommand, nothing by hand."""

from __future__ import annotations

import argparse
import pkgutil

import neuralign.bench
from neuralign.bench import Measurement, measurements, register


def test_every_measurement_module_is_a_subcommand_in_help_order():
    modules = [m.name for m in pkgutil.iter_modules(neuralign.bench.__path__)
               if not m.name.startswith("_")]
    found = measurements()
    assert all(isinstance(m, Measurement) for m in found)
    assert len(found) == len(modules)
    assert [m.name for m in found][:7] == ["training", "latency", "soak", "field", "mua-encoder",
                                           "generative", "fidelity"]
    parser = argparse.ArgumentParser(prog="neuralign")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "soak", "--hours", "0.5"])
    assert args.hours == 0.5 and args.func is next(m.run for m in found if m.name == "soak")
