"""The 2024 edition's second output: /output/data-centric-model.json, a bare JSON boolean.

It says whether the model was trained on the challenge's data only (the data-centric award category).
The answer comes from, first hit wins: --data-centric / --no-data-centric, the environment variable
PETCT_KIT_DATA_CENTRIC (true/false, 1/0, yes/no), a data-centric-model.json in the model folder. The
kit never guesses it: a 2024 run without an answer stops before any work, saying where to give it.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from petct.atomic import atomic_path
from petct.editions import DATA_CENTRIC_JSON
from petct.environment import DATA_CENTRIC
from petct.errors import InputError

_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def data_centric_answer(*, option: bool | None, model_folders: Sequence[Path]) -> tuple[bool, str]:
    """(answer, where it came from); InputError when no source gives one or a source is malformed."""
    if option is not None:
        return option, "the command line"
    text = DATA_CENTRIC.get()
    if text is not None and text.strip() != "":
        value = _WORDS.get(text.strip().lower())
        if value is None:
            raise InputError(f"{DATA_CENTRIC.name}={text!r}: expected true or false")
        return value, DATA_CENTRIC.name
    for folder in model_folders:
        path = Path(folder) / DATA_CENTRIC_JSON
        if path.is_file():
            return read_data_centric(path), str(path)
    looked = ", ".join(str(Path(f) / DATA_CENTRIC_JSON) for f in model_folders) or "no model folder"
    raise InputError("the 2024 profile writes data-centric-model.json, but nothing says whether the model was "
                     f"trained on the challenge data only: pass --data-centric or --no-data-centric, set "
                     f"{DATA_CENTRIC.name}=true|false, or put true/false in {looked}")


def read_data_centric(path: Path) -> bool:
    """The boolean a data-centric-model.json holds; InputError naming the file otherwise."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"not readable JSON: {exc}", path=path) from None
    if not isinstance(value, bool):
        raise InputError(f"must hold a bare JSON boolean (true or false), found {json.dumps(value)[:40]}", path=path)
    return value


def write_data_centric(value: bool, output_dir: Path) -> Path:
    """Write <output>/data-centric-model.json atomically."""
    target = Path(output_dir) / DATA_CENTRIC_JSON
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        Path(tmp).write_text(json.dumps(value))
    return target
