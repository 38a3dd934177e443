"""Per-round checkpoints of a cluster run: the global model, the records, who dropped, the config.

Files
    ``<dir>/cluster-checkpoint.pt`` holds the latest completed round and
    ``<dir>/cluster-checkpoint.prev.pt`` the one before. Each holds only tensors and plain values:
    ``{"format", "version", "model": state dict, "meta": JSON text, "sha256"}``, where the JSON
    carries the round, the records, the drops and the run configuration, and ``sha256`` is a digest
    of the metadata and every tensor (torch's zip reader does not check its CRCs: a flipped bit in a
    weight would otherwise load silently). They are read with ``torch.load(weights_only=True)``,
    which unpickles nothing but tensors and plain containers, so a checkpoint file cannot run code.

Writing
    After every completed round the checkpoint is written to a temporary file in the same folder,
    flushed to disk, and only then moved into place with ``os.replace``; the file it replaces
    becomes the previous one. A run killed at any moment leaves the last completed round (or, at
    worst, the one before) on disk.

Reading
    :func:`read_checkpoint` falls back to the previous checkpoint when the latest one is missing
    or unreadable (truncated, say) and says so in ``note``; when neither can be read it raises one
    :class:`~edgesplit.errors.EdgeSplitError` naming both files.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from edgesplit.distributed.config import RunConfig
from edgesplit.errors import EdgeSplitError

FILENAME = "cluster-checkpoint.pt"
PREVIOUS = "cluster-checkpoint.prev.pt"
FORMAT = "edgesplit-cluster-checkpoint"
FORMAT_VERSION = 3
_META_KEYS = ("round", "records", "dropped", "config")


def checkpoint_path(directory: str | Path) -> Path:
    """Where the latest checkpoint of ``directory`` lives."""
    return Path(directory) / FILENAME


def previous_path(directory: str | Path) -> Path:
    """Where the previous (second latest) checkpoint of ``directory`` lives."""
    return Path(directory) / PREVIOUS


def _digest(meta: str, state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the metadata text and of every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(meta.encode("utf-8"))
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"|{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(directory: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (``round``, ``model`` state dict, ``records``, ``dropped``, ``config``)
    atomically as the latest checkpoint, keeping the one it replaces as the previous; return the
    path."""
    missing = [k for k in ("model", *_META_KEYS) if k not in payload]
    if missing:
        raise EdgeSplitError(f"checkpoint: payload lacks {', '.join(missing)}")
    path = checkpoint_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({k: payload[k] for k in _META_KEYS})
    state = {k: v.detach().cpu() for k, v in payload["model"].items()}
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save({"format": FORMAT, "version": FORMAT_VERSION, "model": state, "meta": meta,
                        "sha256": _digest(meta, state)}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.replace(path, previous_path(directory))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _read_one(path: Path) -> dict[str, Any]:
    """One checkpoint file, checked; raises :class:`EdgeSplitError` with a one-line reason."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for a broken file
        raise EdgeSplitError(f"checkpoint {path}: unreadable (truncated or not a checkpoint: "
                             f"{_first_line(exc)})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise EdgeSplitError(f"checkpoint {path}: not an edgesplit cluster checkpoint")
    if raw.get("version") != FORMAT_VERSION:
        raise EdgeSplitError(f"checkpoint {path}: format version {raw.get('version')}, expected {FORMAT_VERSION}")
    try:
        model = raw["model"]
        if not isinstance(raw["meta"], str) or not isinstance(model, dict) \
                or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
            raise TypeError("bad layout")
        if raw.get("sha256") != _digest(raw["meta"], model):
            raise ValueError("the checksum of its contents does not match (a damaged file)")
        meta = json.loads(raw["meta"])
        if not isinstance(meta, dict):
            raise TypeError("bad layout")
        RunConfig.from_dict(meta["config"])
        out = {"round": int(meta["round"]), "model": model, "records": list(meta["records"]),
               "dropped": list(meta["dropped"]), "config": meta["config"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise EdgeSplitError(f"checkpoint {path}: damaged contents ({_first_line(exc)})") from None
    return out


def read_checkpoint(directory: str | Path) -> dict[str, Any] | None:
    """The latest readable checkpoint in ``directory`` (``None`` if there is none): ``round``,
    ``model``, ``records``, ``dropped``, ``config``, ``path`` and ``note`` (``None``, or a sentence
    saying that the latest file was unreadable and the previous one is used). Raises
    :class:`EdgeSplitError` when checkpoints exist but none can be read."""
    latest, prev = checkpoint_path(directory), previous_path(directory)
    if not latest.is_file() and not prev.is_file():
        return None
    problem = f"{latest} is missing"
    if latest.is_file():
        try:
            return {**_read_one(latest), "path": str(latest), "note": None}
        except EdgeSplitError as exc:
            if not prev.is_file():
                raise
            problem = str(exc)
    try:
        ck = _read_one(prev)
    except EdgeSplitError as exc:
        raise EdgeSplitError(f"{problem}; the previous one is no better: {exc}") from None
    ck["path"] = str(prev)
    ck["note"] = f"{problem}; falling back to the previous checkpoint {prev} (round {ck['round']})"
    return ck


def load_checkpoint(directory: str | Path, cfg: RunConfig) -> dict[str, Any] | None:
    """The checkpoint in ``directory`` if it belongs to a run like ``cfg``; raises naming every
    field that differs (model, dataset, devices, cuts, samples, batch size, seed, ...)."""
    ck = read_checkpoint(directory)
    if ck is None:
        return None
    diffs = config_differences(RunConfig.from_dict(ck["config"]), cfg)
    if diffs:
        raise EdgeSplitError(
            f"checkpoint {ck['path']}: made by another run ({'; '.join(diffs)}); "
            "resume with the same settings or use another --checkpoint-dir"
        )
    return ck


def config_differences(old: RunConfig, new: RunConfig) -> list[str]:
    """``"field: A in the checkpoint, B now"`` for every training setting that differs between two
    run configurations (what a resumed run may not change)."""
    checks = {
        "model": (old.model, new.model),
        "dataset": (old.dataset, new.dataset),
        "devices": (len(old.devices), len(new.devices)),
        "cuts": ([d.cut for d in old.devices], [d.cut for d in new.devices]),
        "shares": ([round(d.share, 12) for d in old.devices], [round(d.share, 12) for d in new.devices]),
        "samples": ([d.samples for d in old.devices], [d.samples for d in new.devices]),
        "batch_size": (old.batch_size, new.batch_size),
        "scheduler": (old.scheduler, new.scheduler),
        "seed": (old.seed, new.seed),
        "lr": (old.lr, new.lr),
        "momentum": (old.momentum, new.momentum),
        "non_iid_alpha": (old.non_iid_alpha, new.non_iid_alpha),
    }
    return [f"{k}: {a} in the checkpoint, {b} now" for k, (a, b) in checks.items() if a != b]
