"""Precomputed features in an .npz file: checked from the array headers alone (before any work),
then loaded.

Expected arrays: X_train (n, d) and X_test (m, d) floating point; y_train (n,) and y_test (m,)
integer labels; optionally X_val / y_val (both or neither) and class_names (C,) strings.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from .errors import ConfigError

REQUIRED = ("X_train", "y_train", "X_test", "y_test")
OPTIONAL = ("X_val", "y_val", "class_names")


def _headers(path: str) -> dict[str, tuple[tuple, np.dtype]]:
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
    if "class_names" in arrays and arrays["class_names"][1].kind not in "UO":
        raise ConfigError(f"features: {path}: class_names must be strings, got dtype {arrays['class_names'][1]}")


def load_features_file(path: str) -> dict:
    """The arrays of a checked features file ({name: array}; X_val / y_val / class_names None when absent)."""
    check_features_file(path)
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in REQUIRED}
        for k in OPTIONAL:
            out[k] = z[k] if k in z else None
    if out["class_names"] is not None:
        out["class_names"] = [str(c) for c in out["class_names"]]
    return out
