"""Where efficiency models are kept: beside the ceilings, one file per machine, device type and
settings, ``<machine_id>-<device type>-<settings_id>.json`` under ``$LAYERBENCH_MODELS``, else the
``models`` folder of the ceilings store (``$LAYERBENCH_CEILINGS``, else
``$LAYERBENCH_CACHE/ceilings`` or ``~/.cache/layerbench/ceilings``, as
``harness.ceilings.calibrate.default_store`` says; spelled out here so that reading a model never
imports torch)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from harness.errors import SpecError
from harness.predict.model import EfficiencyModel, load, save

MODELS_ENV = "LAYERBENCH_MODELS"
#: A machine or settings id as it appears in a file name (12 hex digits; ``v1...`` for upgraded runs).
_ID = re.compile(r"^[A-Za-z0-9_.]{1,64}$")


def default_store() -> Path:
    """``$LAYERBENCH_MODELS``, else ``<ceilings store>/models``."""
    if os.environ.get(MODELS_ENV):
        return Path(os.environ[MODELS_ENV])
    cache = Path(os.environ.get("LAYERBENCH_CACHE", Path.home() / ".cache" / "layerbench"))
    return Path(os.environ.get("LAYERBENCH_CEILINGS") or cache / "ceilings") / "models"


def _safe(value: str, what: str) -> str:
    if not _ID.match(value):
        raise SpecError(what, value, "letters, digits, '.' or '_' (an id as rows store it)")
    return value


def model_path(machine_id: str, device_type: str, settings_id: str, store: str | Path | None = None) -> Path:
    """The file of the model of this machine, device type and settings."""
    name = f"{_safe(machine_id, 'machine_id')}-{_safe(device_type, 'device')}-{_safe(settings_id, 'settings_id')}"
    return Path(store or default_store()) / f"{name}.json"


def store_model(model: EfficiencyModel, store: str | Path | None = None) -> Path:
    return save(model, model_path(model.machine_id, model.device_type, model.settings_id, store))


def stored_paths(machine_id: str | None = None, device_type: str | None = None,
                 store: str | Path | None = None) -> list[Path]:
    """Model files in the store, of one machine and device type when given, newest first."""
    root = Path(store or default_store())
    pattern = f"{_safe(machine_id, 'machine_id') if machine_id else '*'}-" \
              f"{_safe(device_type, 'device') if device_type else '*'}-*.json"
    try:
        found = [p for p in root.glob(pattern) if p.is_file()]
    except OSError:
        return []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def find_model(machine_id: str, device_type: str, settings_id: str | None = None,
               store: str | Path | None = None) -> EfficiencyModel | None:
    """The stored model of this machine and device type (and settings, when given; else the newest of
    any settings), or ``None``. A file there that cannot be used raises ``ModelFileError``."""
    if settings_id is not None:
        path = model_path(machine_id, device_type, settings_id, store)
        return load(path, machine_id=machine_id) if path.exists() else None
    paths = stored_paths(machine_id, device_type, store)
    return load(paths[0], machine_id=machine_id) if paths else None


def models_for(keys: Iterable[tuple[str, str, str]], store: str | Path | None = None) -> list[EfficiencyModel]:
    """The stored models of each (machine_id, device type, settings_id) that has one."""
    out = []
    for mid, dev, settings in dict.fromkeys(keys):
        try:
            m = find_model(str(mid), str(dev), str(settings), store)
        except SpecError:
            m = None                    # an id no file can be named by (a pytest-benchmark machine): no model
        if m is not None:
            out.append(m)
    return out
