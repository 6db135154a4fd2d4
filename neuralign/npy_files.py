"""Reading the ``.npy`` / ``.npz`` files a user points at without ever running code from them.

``np.load(..., allow_pickle=True)`` unpickles object arrays, and unpickling a crafted file runs
whatever code its author put in it. neuralign reads arrays with ``allow_pickle=False`` everywhere
(:func:`load_arrays`); a file that holds pickled objects is refused with one error naming it. The
one exception is THINGS-EEG2's published dict files (``preprocessed_eeg_*.npy``, ``raw_eeg_*.npy``,
``image_metadata.npy``), which exist only as pickles: they are read by
:func:`neuralign.offline.loaders.things_eeg2.load_published_dict`, and even there only through
:class:`DataOnlyUnpickler`, which rebuilds dicts, lists, strings, numbers and numpy arrays and
refuses anything else (a ``__reduce__`` that would call a function).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from neuralign.errors import DataError

#: why a pickled file is refused, and what to do instead (appended to the file's name)
PICKLE_REFUSED = (
    "holds pickled Python objects, and unpickling a file can run arbitrary code; neuralign only "
    "unpickles THINGS-EEG2's published dict files (preprocessed_eeg_*.npy, raw_eeg_*.npy, "
    "image_metadata.npy). Save plain arrays instead (np.save / np.savez with allow_pickle=False)"
)

#: the only globals a THINGS-EEG2 dict pickle needs: numpy's array, dtype and scalar rebuilders
#: (numpy 1.x spells the module numpy.core, numpy 2.x numpy._core); protocol-2 pickles store
#: bytes through _codecs.encode (a text codec, nothing to execute)
_DATA_GLOBALS = frozenset({
    (mod, name)
    for core in ("numpy.core", "numpy._core")
    for mod, name in ((f"{core}.multiarray", "_reconstruct"), (f"{core}.multiarray", "scalar"),
                      (f"{core}.numeric", "_frombuffer"))
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
       ("_codecs", "encode")})


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a global that :class:`DataOnlyUnpickler` does not rebuild."""


class DataOnlyUnpickler(pickle.Unpickler):
    """An unpickler for data files: dicts, lists, strings, numbers and numpy arrays only.

    Why: the code a crafted pickle runs is always reached through a global it names
    (``os.system``, ``builtins.exec`` ...); refusing every global but numpy's rebuilders leaves
    nothing to call."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _DATA_GLOBALS:
            if module.startswith("numpy.core.") and hasattr(np, "_core"):
                module = "numpy._core." + module[len("numpy.core."):]  # numpy 1.x files
            return super().find_class(module, name)
        raise RefusedGlobal(f"it names {module}.{name}, which a data file never needs")


def read_pickled_npy(path: Path) -> Any:
    """The object in an object-dtype ``.npy`` file, rebuilt by :class:`DataOnlyUnpickler`
    (plain arrays are read without unpickling). DataError naming the file otherwise."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            fmt = np.lib.format
            version = fmt.read_magic(f)
            if version == (1, 0):
                _, _, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                _, _, dtype = fmt.read_array_header_2_0(f)
            else:  # 3.0 (utf-8 field names): no public reader
                _, _, dtype = fmt._read_array_header(f, version)
            if not dtype.hasobject:
                f.seek(0)
                return fmt.read_array(f, allow_pickle=False)
            # what np.load(allow_pickle=True) does here, minus every global but numpy's
            obj = DataOnlyUnpickler(f).load()
    except RefusedGlobal as exc:
        raise DataError(f"{path}: refused: {exc}; this is not a THINGS-EEG2 data file (only "
                        "files from the published dataset should be loaded)") from None
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise DataError(f"{path}: cannot read as a .npy file ({exc.__class__.__name__}: "
                        f"{exc})") from None
    return obj


def load_arrays(path: Path, what: str = "array file") -> np.ndarray | dict[str, np.ndarray]:
    """A ``.npy`` file's array, or every array of a ``.npz`` file (name -> array), read without
    unpickling: a file holding pickled objects is one DataError saying so (:data:`PICKLE_REFUSED`)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(6)
        if not head.startswith((b"\x93NUMPY", b"PK")):  # np.load would take it for a pickle
            raise DataError(f"{path}: this {what} {PICKLE_REFUSED}" if head[:1] == b"\x80"
                            else f"{path}: not a .npy or .npz file (cannot read it as a {what})")
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded as z:
                return {k: z[k] for k in z.files}
        return loaded
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(f"{path}: this {what} {PICKLE_REFUSED}") from None
        raise DataError(f"{path}: cannot read as a {what} ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read as a {what} ({exc})") from None
