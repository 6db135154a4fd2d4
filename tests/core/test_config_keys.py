"""Every config key is read by the code (issue 10, item 2): a setting that does nothing is a lie.

The test walks the schema (``neuralign.config.Config`` and its nested sections) and looks, in the
syntax trees of the package's code (not the schema modules, not tests), for a read of each leaf
key: ``<...>.<section>.<key>`` (``config.realtime.batch_size``), ``<var>.<key>`` where ``var``
was bound to that section in the same file (``rt = config.realtime``, ``cfg: RealtimeConfig``,
``self.cfg = config or RealtimeConfig()``), or ``getattr(x, "<key>")``.
"""

from __future__ import annotations

import ast
import types
import typing
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel

from neuralign.config import Config

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("neuralign", "models", "offline", "realtime", "ui")
ALL = "<every key>"
# Keys of the generative decoders' schema (neuralign/generative_config.py, issue 14, another
# owner) that nothing reads yet; listed so they stay visible. The test fails when one of them
# starts being read (drop it here) and on any other unread key.
KNOWN_UNREAD: dict[str, str] = {}  # key -> why it is allowed to stay unread for now
SCHEMA_FILES = {REPO / "neuralign" / "config.py", REPO / "neuralign" / "generative_config.py"}


def _section_class(annotation) -> type[BaseModel] | None:
    """The pydantic section class of a field annotation (``X``, ``X | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _section_class(arg)
            if found is not None:
                return found
    return None


def schema_leaves() -> list[tuple[str, type[BaseModel], str, str]]:
    """(dotted key, owning class, parent field name, key) for every leaf of the schema."""
    out = []

    def walk(cls: type[BaseModel], prefix: str, parent: str) -> None:
        for name, field in cls.model_fields.items():
            sub = _section_class(field.annotation)
            if sub is not None:
                walk(sub, f"{prefix}{name}.", name)
            else:
                out.append((f"{prefix}{name}", cls, parent, name))

    walk(Config, "", "")
    return out


def _names_in(annotation: ast.AST | None) -> set[str]:
    """Identifiers in an annotation (``RealtimeConfig | None``, ``"RealtimeConfig"``)."""
    if annotation is None:
        return set()
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:
            annotation = ast.parse(annotation.value, mode="eval")
        except SyntaxError:
            return set()
    return {n.id for n in ast.walk(annotation) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(annotation) if isinstance(n, ast.Attribute)}


def _target_key(node: ast.AST) -> str | None:
    """``x`` or ``self.x`` as a string (what later reads look like)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return f"{node.value.id}.{node.attr}"
    return None


def _bound_to(value: ast.AST, class_names: set[str], parents: set[str],
              bound: set[str] = frozenset()) -> bool:
    """Whether an assigned value is a section: ``a.<parent>``, ``Section(...)``, ``a or b``, or
    a name already bound to one (``cfg = self.cfg``)."""
    if _target_key(value) in bound:
        return True
    if isinstance(value, ast.Attribute):
        return value.attr in parents
    if isinstance(value, ast.Call):
        return bool(_names_in(value.func) & class_names)
    if isinstance(value, ast.BoolOp):
        return any(_bound_to(v, class_names, parents, bound) for v in value.values)
    if isinstance(value, ast.IfExp):
        return (_bound_to(value.body, class_names, parents, bound)
                or _bound_to(value.orelse, class_names, parents, bound))
    return False


def _nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of a tree, walked once (the analysis visits each tree per section class)."""
    if not hasattr(tree, "_all_nodes"):
        tree._all_nodes = list(ast.walk(tree))
    return tree._all_nodes


def _bind(tree: ast.AST, class_names: set[str], parents: set[str], bound: set[str]) -> None:
    """Add to ``bound`` the names (``x``, ``self.x``) a section is assigned to in ``tree``."""
    for node in _nodes(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.AnnAssign, ast.Assign)):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for arg in [*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs]:
                if _names_in(arg.annotation) & class_names:
                    bound.add(arg.arg)
        elif isinstance(node, ast.AnnAssign):
            key = _target_key(node.target)
            if key and (_names_in(node.annotation) & class_names or (
                    node.value is not None and _bound_to(node.value, class_names, parents, bound))):
                bound.add(key)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                pairs = [(target, node.value)]
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    pairs = list(zip(target.elts, node.value.elts))  # a, b = x.s1, x.s2
                for t, v in pairs:
                    key = _target_key(t)
                    if key and _bound_to(v, class_names, parents, bound):
                        bound.add(key)


def reads_in(tree: ast.AST, class_names: set[str], parents: set[str]) -> set[str]:
    """Attribute names read off a section of one of ``class_names`` (reached via ``parents``);
    ``ALL`` in the set when the section is read key by key (``getattr(section, name)``)."""
    bound: set[str] = set()
    for _ in range(3):  # aliases of aliases (cfg = self.cfg after self.cfg = config or ...)
        n = len(bound)
        _bind(tree, class_names, parents, bound)
        if len(bound) == n:
            break
    read: set[str] = set()
    for node in _nodes(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            base = node.value
            if (isinstance(base, ast.Attribute) and base.attr in parents) or (
                    _target_key(base) in bound):
                read.add(node.attr)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "getattr" and len(node.args) >= 2):
            if isinstance(node.args[1], ast.Constant):
                read.add(str(node.args[1].value))
            elif _target_key(node.args[0]) in bound or _bound_to(node.args[0], class_names,
                                                                   parents):
                read.add(ALL)
    return read


def validator_reads(tree: ast.AST, class_name: str) -> set[str]:
    """``self.<key>`` read in the schema's own methods of ``class_name`` (a validator that derives
    another value from a key, e.g. ``dataset.modality`` -> the simulator's modality)."""
    read: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for sub in ast.walk(node):
                if (isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Load)
                        and isinstance(sub.value, ast.Name) and sub.value.id == "self"):
                    read.add(sub.attr)
    return read


def unread_keys() -> list[str]:
    leaves = schema_leaves()
    parents_of: dict[type, set[str]] = defaultdict(set)
    for _, cls, parent, _ in leaves:
        parents_of[cls].add(parent)
    trees = [ast.parse(p.read_text(), str(p)) for d in CODE_DIRS for p in (REPO / d).rglob("*.py")
             if p not in SCHEMA_FILES]
    read_by_class: dict[type, set[str]] = {}
    for cls, parents in parents_of.items():
        names = {cls.__name__}
        read_by_class[cls] = set().union(
            *(reads_in(t, names, parents) for t in trees),
            *(validator_reads(ast.parse(p.read_text()), cls.__name__) for p in SCHEMA_FILES))
    return [dotted for dotted, cls, _, key in leaves
            if key not in read_by_class[cls] and ALL not in read_by_class[cls]]


def test_the_walk_sees_reads_and_misses():
    """The analysis itself: a read through a bound section counts, a write does not."""
    src = ("def f(rt: RealtimeConfig, config):\n"
           "    a = rt.batch_size\n"
           "    pre = config.preprocessing\n"
           "    b = pre.l_freq + config.realtime.top_k\n"
           "    rt.torch_threads = 3\n")
    tree = ast.parse(src)
    assert reads_in(tree, {"RealtimeConfig"}, {"realtime"}) == {"batch_size", "top_k"}
    assert reads_in(tree, {"PreprocessingConfig"}, {"preprocessing"}) == {"l_freq"}


def test_every_config_key_is_read_by_the_code():
    unread = unread_keys()
    missing = [k for k in unread if k not in KNOWN_UNREAD]
    assert not missing, f"config keys nothing reads (use them or remove them): {missing}"
    now_read = sorted(set(KNOWN_UNREAD) - set(unread))
    assert not now_read, f"read now, drop them from KNOWN_UNREAD: {now_read}"
