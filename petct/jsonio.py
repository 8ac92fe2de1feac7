"""Strict JSON: NaN and infinity become null, files are written atomically and read with one-line errors."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from petct.atomic import atomic_path, require_size
from petct.errors import InputError


def strict(value: Any) -> Any:
    """A copy of `value` that json.dumps(allow_nan=False) accepts: NaN/inf -> None, numpy -> Python."""
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return strict(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


def dumps(value: Any, *, indent: int | None = 2) -> str:
    return json.dumps(strict(value), indent=indent, allow_nan=False)


def write_json_atomic(value: Any, path: str | Path) -> Path:
    """Write strict JSON atomically (see petct.atomic), refusing a file that landed shorter than its text."""
    data = (dumps(value) + "\n").encode("utf-8")
    with atomic_path(path, verify=lambda tmp: require_size(tmp, len(data), path=path)) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return Path(path)


def read_json(path: str | Path, *, what: str) -> Any:
    """The parsed contents of a JSON file; InputError naming the file (and `what` it should be) otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} does not exist", path=path) from None
    except IsADirectoryError:
        raise InputError(f"{what} is a folder, not a file", path=path) from None
    except UnicodeDecodeError:
        raise InputError(f"{what} is not readable JSON: not UTF-8 text", path=path) from None
    except OSError as exc:
        raise InputError(f"{what} cannot be read: {exc.strerror or exc}", path=path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} is not readable JSON: {exc}", path=path) from None
    except RecursionError:
        raise InputError(f"{what} is not readable JSON: nested too deeply", path=path) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise InputError(f"{what} is not readable JSON: {exc}", path=path) from None

