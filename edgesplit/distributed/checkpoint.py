"""Per-round checkpoints of a cluster run: the global model, the records, who dropped, the config.

One file, ``<dir>/cluster-checkpoint.pt``, replaced atomically (written to a temporary file, then
``os.replace``) after every completed round, so a run killed at any moment leaves the last
completed round on disk. A restarted run with ``resume`` continues with the next round; it refuses
a checkpoint of another model, dataset, device count or schedule with a message naming the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from edgesplit.distributed.config import RunConfig
from edgesplit.errors import EdgeSplitError

FILENAME = "cluster-checkpoint.pt"
FORMAT = "edgesplit-cluster-checkpoint"
FORMAT_VERSION = 1


def checkpoint_path(directory: str | Path) -> Path:
    """Where the checkpoint of ``directory`` lives."""
    return Path(directory) / FILENAME


def save_checkpoint(directory: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (round, model, records, dropped, config) atomically; return the path."""
    path = checkpoint_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    torch.save({"format": FORMAT, "version": FORMAT_VERSION, **payload}, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(directory: str | Path) -> dict[str, Any] | None:
    """The checkpoint in ``directory`` (``None`` if there is none); raises if it is not ours."""
    path = checkpoint_path(directory)
    if not path.is_file():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch.load raises many types for a broken file
        raise EdgeSplitError(f"checkpoint {path}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise EdgeSplitError(f"checkpoint {path}: not an edgesplit cluster checkpoint")
    if ck.get("version") != FORMAT_VERSION:
        raise EdgeSplitError(f"checkpoint {path}: format version {ck.get('version')}, expected {FORMAT_VERSION}")
    return ck


def load_checkpoint(directory: str | Path, cfg: RunConfig) -> dict[str, Any] | None:
    """The checkpoint in ``directory`` if it belongs to a run like ``cfg``; raises naming the first
    field that differs (model, dataset, devices, cuts, samples, batch size)."""
    ck = read_checkpoint(directory)
    if ck is None:
        return None
    old = RunConfig.from_dict(ck["config"])
    checks = {
        "model": (old.model, cfg.model),
        "dataset": (old.dataset, cfg.dataset),
        "devices": (len(old.devices), len(cfg.devices)),
        "cuts": ([d.cut for d in old.devices], [d.cut for d in cfg.devices]),
        "samples": ([d.samples for d in old.devices], [d.samples for d in cfg.devices]),
        "batch_size": (old.batch_size, cfg.batch_size),
        "seed": (old.seed, cfg.seed),
    }
    for key, (a, b) in checks.items():
        if a != b:
            raise EdgeSplitError(
                f"checkpoint {checkpoint_path(directory)}: {key} is {a} there but {b} in this run; "
                "resume with the same settings or use another --checkpoint-dir"
            )
    return ck
