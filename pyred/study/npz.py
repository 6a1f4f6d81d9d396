"""Precomputed features in an .npz file, checked whole before any work: the arrays' headers (names,
shapes, dtypes), then their values (every feature finite, every label a class), then loaded.

Expected arrays: X_train (n, d) and X_test (m, d) floating point; y_train (n,) and y_test (m,)
integer labels; optionally X_val / y_val (both or neither) and class_names (C,) strings.
"""

from __future__ import annotations

import os
import zipfile
from typing import Any, cast

import numpy as np

from .errors import ConfigError

REQUIRED = ("X_train", "y_train", "X_test", "y_test")
OPTIONAL = ("X_val", "y_val", "class_names")


def _headers(path: str) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
    """{array name: (shape, dtype)} read from the .npy headers inside the archive."""
    out = {}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:  # a rarer format version: read the array itself
                    f.seek(0)
                    a = np.lib.format.read_array(f, allow_pickle=False)
                    shape, dtype = a.shape, a.dtype
            out[info.filename[:-4]] = (shape, dtype)
    return out


def check_features_file(path: str) -> None:
    """Raises ConfigError naming the file and the array unless it holds valid study features."""
    load_features_file(path)


def _check_structure(path: str) -> None:
    """The arrays' names, shapes and dtypes, from their headers."""
    if not os.path.isfile(path):
        raise ConfigError(f"features: no such file {path}")
    try:
        arrays = _headers(path)
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ConfigError(f"features: {path} is not a readable .npz archive ({exc})") from None
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise ConfigError(f"features: {path} lacks arrays {missing} (expected {list(REQUIRED)}, optionally "
                          f"{list(OPTIONAL)})")
    if ("X_val" in arrays) != ("y_val" in arrays):
        raise ConfigError(f"features: {path} has only one of X_val / y_val; give both or neither")
    width = None
    for split in ("train", "val", "test"):
        if f"X_{split}" not in arrays:
            continue
        (xs, xd), (ys, yd) = arrays[f"X_{split}"], arrays[f"y_{split}"]
        if len(xs) != 2 or xs[0] < 1 or xs[1] < 1:
            raise ConfigError(f"features: {path}: X_{split} must be a 2-D (samples, features) array, got shape {xs}")
        if xd.kind != "f":
            raise ConfigError(f"features: {path}: X_{split} must be floating point, got dtype {xd}")
        if width is not None and xs[1] != width:
            raise ConfigError(f"features: {path}: X_{split} has {xs[1]} features, X_train has {width}")
        width = xs[1]
        if len(ys) != 1 or ys[0] != xs[0]:
            raise ConfigError(f"features: {path}: y_{split} must be 1-D with one label per row of X_{split} "
                              f"({xs[0]}), got shape {ys}")
        if yd.kind not in "iu" or (yd.kind == "u" and yd.itemsize == 8):
            raise ConfigError(f"features: {path}: y_{split} must hold integer class labels, got dtype {yd}")
    if "class_names" in arrays:
        shape, dtype = arrays["class_names"]
        if dtype.kind == "O":
            raise ConfigError(f"features: {path}: class_names is an object array (pickled), which pyred does not "
                              "load; save it as strings: np.array(names, dtype=str)")
        if dtype.kind != "U" or len(shape) != 1:
            raise ConfigError(f"features: {path}: class_names must be a 1-D array of strings, got dtype {dtype} "
                              f"shape {shape}")


def _read(path: str) -> dict[str, np.ndarray]:
    """Every array of the file ({name: array}), a damaged one named in the error."""
    out = {}
    try:
        z = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ConfigError(f"features: {path} is not a readable .npz archive ({exc})") from None
    with z:
        for name in REQUIRED + OPTIONAL:
            if name not in z.files:
                continue
            try:
                out[name] = z[name]
            except Exception as exc:  # noqa: BLE001 -- zipfile, zlib and numpy raise many kinds for damaged data
                raise ConfigError(f"features: {path}: array {name} cannot be read ({type(exc).__name__}: "
                                  f"{exc}); the file is damaged or truncated") from None
    return out


def _check_values(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Every feature finite, every label a class index that class_names (when given) can name."""
    for split in ("train", "val", "test"):
        # y_<split> is there whenever X_<split> is (_check_structure)
        X, y = arrays.get(f"X_{split}"), cast(np.ndarray, arrays.get(f"y_{split}"))
        if X is None:
            continue
        finite = np.isfinite(X)
        if not finite.all():
            row, col = (int(i) for i in np.argwhere(~finite)[0])
            raise ConfigError(f"features: {path}: X_{split} holds a non-finite value ({X[row, col]}) at row {row}, "
                              f"column {col}; pyred needs finite features")
        if y.size and int(y.min()) < 0:
            raise ConfigError(f"features: {path}: y_{split} holds the negative label {int(y.min())}; labels are "
                              "class indices 0, 1, ...")
    names = arrays.get("class_names")
    if names is not None:
        top = max(int(arrays[f"y_{s}"].max()) for s in ("train", "val", "test")
                  if f"y_{s}" in arrays and arrays[f"y_{s}"].size)
        if top >= len(names):
            raise ConfigError(f"features: {path}: class_names names {len(names)} classes, but the labels go up to "
                              f"{top} ({top + 1} classes)")


def load_features_file(path: str) -> dict[str, Any]:
    """The arrays of a features file, checked ({name: array}; X_val / y_val / class_names None when absent)."""
    _check_structure(path)
    arrays = _read(path)
    _check_values(path, arrays)
    out: dict[str, Any] = {k: arrays.get(k) for k in REQUIRED + OPTIONAL}
    if out["class_names"] is not None:
        out["class_names"] = [str(c) for c in out["class_names"]]
    return out
