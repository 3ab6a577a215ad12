"""The behaviour model the agents' queue is ranked by: the file COLLECT_QUEUE_MODEL names (the
setting is read by the service, `Connections.settings.collect_queue_model`), loaded once per
change of the file, so a newly fitted model takes effect without a restart."""

from __future__ import annotations

from pathlib import Path

from contracts.behaviour import BehaviourModel
from lab.model_file import ModelFileError, load_model

_loaded: dict[Path, tuple[int, BehaviourModel]] = {}


def queue_model(path: Path | None) -> BehaviourModel | None:
    """The model in `path`, or None when no file is configured; a file that cannot be read or
    is not a model is bad input naming the file and the field (ModelFileError)."""
    if path is None:
        return None
    try:
        stamp = path.stat().st_mtime_ns
    except OSError as exc:
        raise ModelFileError(str(path), f"COLLECT_QUEUE_MODEL: cannot read: "
                                        f"{exc.strerror or exc}") from None
    cached = _loaded.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    model = load_model(path)
    _loaded[path] = (stamp, model)
    return model
