"""Source kinds by spec prefix: ``neuralign run --source PREFIX:REST``.

A source kind is declared once, in its own light module ``realtime/sources/kind_<name>.py``,
with :func:`register_source`; :func:`source_kinds` imports every such module of this package
(pkgutil), so adding a source is adding one file, and the ``--source`` / ``--markers`` help and
the unknown-prefix error are written from what is registered. The declaring modules must stay
cheap to import (the CLI builds its help from them on every start): the transport (pylsl,
brainflow, mne) is imported inside the builder.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neuralign.config import RealtimeConfig
    from neuralign.realtime.sources.base import Source

#: ``(rest of the spec after 'PREFIX:', --markers spec or None, realtime config, replay speed)
#: -> a not yet opened Source``; raises neuralign.errors.UserError naming the flag on a bad spec.
SourceBuilder = Callable[[str, "str | None", "RealtimeConfig", float], "Source"]

#: modules of this package whose name starts with this declare source kinds
KIND_MODULE_PREFIX = "kind_"


@dataclass(frozen=True)
class SourceKind:
    """One ``--source`` prefix: its builder and how the help and errors spell it."""

    prefix: str
    build: SourceBuilder
    #: the short form in the unknown-prefix error, e.g. ``lsl:NAME``
    usage: str
    #: every form, for the ``--source`` help, e.g. ``lsl:NAME | lsl:source_id=ID``
    grammar: str
    #: the ``--markers`` forms this source takes, for the ``--markers`` help ('' = none of its own)
    markers: str = ""


_KINDS: dict[str, SourceKind] = {}
_discovered = False


def register_source(prefix: str, *, usage: str, grammar: str | None = None,
                    markers: str = "") -> Callable[[SourceBuilder], SourceBuilder]:
    """Decorator registering ``builder`` as the source of ``PREFIX:...`` specs.

    Registering a prefix again replaces it (a re-imported module, or a deliberate override).
    """
    if not prefix or ":" in prefix:
        raise ValueError(f"a source prefix is a non-empty word without ':', got {prefix!r}")

    def decorate(builder: SourceBuilder) -> SourceBuilder:
        _KINDS[prefix] = SourceKind(prefix, builder, usage, grammar or usage, markers)
        return builder

    return decorate


def unregister_source(prefix: str) -> None:
    """Forget ``prefix`` (tests registering a toy kind clean up with it)."""
    _KINDS.pop(prefix, None)


def source_kinds() -> dict[str, SourceKind]:
    """Every registered kind, in registration order (the package's kind modules first)."""
    global _discovered
    if not _discovered:
        package = importlib.import_module("neuralign.realtime.sources")
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
            if info.name.startswith(KIND_MODULE_PREFIX):
                importlib.import_module(f"{package.__name__}.{info.name}")
        _discovered = True
    return dict(sorted(_KINDS.items(), key=lambda kv: _order(kv[0])))


def _order(prefix: str) -> tuple[int, str]:
    """The shipped kinds in their historical order (lsl, brainflow, file), then the others."""
    shipped = ("lsl", "brainflow", "file")
    return (shipped.index(prefix) if prefix in shipped else len(shipped), prefix)


def expected_sources() -> str:
    """``lsl:NAME, brainflow:BOARD or file:PATH``: the short forms, for error messages."""
    usages = [k.usage for k in source_kinds().values()]
    return usages[0] if len(usages) == 1 else f"{', '.join(usages[:-1])} or {usages[-1]}"


def source_help() -> str:
    """The ``--source`` help text: every registered form."""
    forms = " | ".join(k.grammar for k in source_kinds().values())
    return f"{forms} (realtime.source; required unless the config sets it)"


def markers_help() -> str:
    """The ``--markers`` help text: the marker forms of the registered kinds."""
    forms = [k.markers for k in source_kinds().values() if k.markers]
    joined = forms[0] if len(forms) == 1 else f"{', '.join(forms[:-1])} or {forms[-1]}"
    return (f"stimulus markers: {joined}; without markers the engine decodes a sliding window "
            "(realtime.markers)")
