"""Datasets for real split training, and their split over devices.

Every dataset is held as a :class:`ArrayDataset`: ``uint8`` images ``(n, C, H, W)``, ``int64``
labels, class names and the per-channel mean and standard deviation used to normalise batches.

Sources
-------
``cifar10``
    From the official python batches (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``,
    or the ``cifar-10-python.tar.gz`` archive), or from an ImageFolder tree of images
    (``train/<class>/*.jpg|png``, ``test/<class>/...``, such as the extracted
    ``../shared/data/cifar10/cifar10-jpeg.tar.gz``), or from such a ``.tar.gz`` archive directly.
    Images are decoded once (Pillow) into a ``.npy`` cache under :func:`cache_dir`.
``mnist``, ``fashion_mnist``
    From the IDX files (``train-images-idx3-ubyte[.gz]`` and so on), searched in the data folder
    and the usual sub-folders (``MNIST/raw``, ``FashionMNIST/raw``, ``mnist``, ...).
``synthetic`` (3x32x32) and ``synthetic_mnist`` (1x28x28)
    The offline default: seeded, learnable class patterns plus noise; needs no file at all.

A missing or corrupt dataset raises :class:`DatasetError` (a ``ValueError``) with one message
that says what was looked for and where.

Splits over devices (:func:`split_indices`): IID, or Dirichlet(alpha) class proportions per
device; the number of samples of each device is given (from the scenario).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from edgesplit.errors import EdgeSplitError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle-boot")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")

#: Dataset name -> the zoo's dataset key with the same input shape (for build_model / profiles).
ZOO_DATASET = {
    "cifar10": "cifar10",
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "synthetic": "cifar10",
    "synthetic_mnist": "mnist",
}
DATASETS: tuple[str, ...] = tuple(ZOO_DATASET)


class DatasetError(EdgeSplitError):
    """A dataset is missing, unknown or corrupt. The message says what was looked for and where."""


@dataclass
class ArrayDataset:
    """Images as ``uint8`` ``(n, C, H, W)``, labels as ``int64`` ``(n,)``."""

    name: str
    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.x.dtype != np.uint8:
            raise DatasetError(f"{self.name}: images must be uint8 (n, C, H, W), got {self.x.dtype} {self.x.shape}")
        if self.y.shape != (self.x.shape[0],):
            raise DatasetError(f"{self.name}: {self.x.shape[0]} images but {self.y.shape} labels")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(int(s) for s in self.x.shape[1:])  # type: ignore[return-value]

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ArrayDataset":
        """The samples at ``indices`` (a copy)."""
        idx = np.asarray(indices, dtype=np.int64)
        return ArrayDataset(self.name, self.x[idx], self.y[idx], self.classes, self.mean, self.std, self.source)

    def head(self, n: int | None, seed: int = 0) -> "ArrayDataset":
        """A seeded random subset of ``n`` samples (all of them if ``n`` is None or too big)."""
        if n is None or n >= len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).permutation(len(self))[:n])
        return self.subset(idx)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x uint8, y int64)`` as torch tensors (sharing memory with the arrays)."""
        return torch.from_numpy(np.ascontiguousarray(self.x)), torch.from_numpy(np.ascontiguousarray(self.y))


# ----------------------------------------------------------------------------- normalisation / batches


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``uint8`` images to normalised float32 (``(x/255 - mean) / std`` per channel); floats pass."""
    if x.dtype != torch.uint8:
        return x
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x.to(torch.float32).div_(255.0) - m).div_(s)


def batches(data: ArrayDataset, batch_size: int = 256, normalized: bool = True
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Iterate over ``data`` in order, in batches of ``(x, y)`` (normalised floats by default)."""
    x, y = data.tensors()
    for i in range(0, len(data), batch_size):
        xb = x[i:i + batch_size]
        yield (normalize(xb, data.mean, data.std) if normalized else xb), y[i:i + batch_size]


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``uint8`` images, on the 0..1 scale."""
    sample = x[: min(len(x), 10000)].astype(np.float64) / 255.0
    mean = tuple(float(v) for v in sample.mean(axis=(0, 2, 3)))
    std = tuple(float(max(v, 1e-3)) for v in sample.std(axis=(0, 2, 3)))
    return mean, std


# ----------------------------------------------------------------------------- cache


def cache_dir(path: str | Path | None = None) -> Path:
    """The decode cache: ``path``, else ``$EDGESPLIT_CACHE``, else ``~/.cache/edgesplit``."""
    if path is not None:
        return Path(path)
    env = os.environ.get("EDGESPLIT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgesplit"


def _source_key(path: Path) -> str:
    """A short key of a source file or folder (path, size, mtime) for cache file names."""
    st = path.stat()
    h = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return h


def _cache_paths(cdir: Path, name: str, key: str, split: str) -> tuple[Path, Path]:
    base = cdir / f"{name}-{key}-{split}"
    return base.with_name(base.name + "-x.npy"), base.with_name(base.name + "-y.npy")


def _cache_load(cdir: Path, name: str, key: str, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    px, py = _cache_paths(cdir, name, key, split)
    if px.is_file() and py.is_file():
        try:
            x, y = np.load(px), np.load(py)
            if x.dtype == np.uint8 and x.ndim == 4 and y.shape == (x.shape[0],):
                return x, y
        except (OSError, ValueError, EOFError):
            pass  # a broken cache entry is rebuilt
    return None


def _cache_save(cdir: Path, name: str, key: str, split: str, x: np.ndarray, y: np.ndarray) -> None:
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        for arr, p in zip((x, y), _cache_paths(cdir, name, key, split)):
            tmp = p.with_name(p.name + f".tmp{os.getpid()}.npy")
            np.save(tmp, arr)
            os.replace(tmp, p)
    except OSError:
        pass  # a read-only cache only costs time


# ----------------------------------------------------------------------------- IDX (MNIST)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain): unsigned-byte data of any rank, checked for size."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path}: unreadable IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetError(f"{path}: not an IDX file (bad magic number)")
    dtype_code, ndim = raw[2], raw[3]
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if dtype_code not in dtypes or ndim < 1:
        raise DatasetError(f"{path}: not an IDX file (type code 0x{dtype_code:02x}, {ndim} dims)")
    if len(raw) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dt = np.dtype(dtypes[dtype_code])
    need = int(np.prod(dims)) * dt.itemsize
    body = raw[4 + 4 * ndim:]
    if len(body) != need:
        raise DatasetError(f"{path}: corrupt IDX file: header says {dims} ({need} bytes), found {len(body)} bytes")
    return np.frombuffer(body, dtype=dt).reshape(dims).astype(dt.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write a ``uint8`` array as an IDX file (gzip-compressed if the name ends in ``.gz``)."""
    path = Path(path)
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    data = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_SUBDIRS = {
    "mnist": ("", "MNIST/raw", "mnist", "MNIST", "mnist/raw"),
    "fashion_mnist": ("", "FashionMNIST/raw", "fashion_mnist", "fashion-mnist", "FashionMNIST",
                      "fashion_mnist/raw", "fashion-mnist/raw"),
}


def _find_file(folder: Path, stem: str) -> Path | None:
    for cand in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = folder / cand
        if p.is_file():
            return p
    return None


def load_idx_dataset(name: str, data_dir: Path, split: str) -> ArrayDataset:
    """MNIST / Fashion-MNIST ``split`` from the IDX files under ``data_dir``."""
    looked = []
    for sub in _IDX_SUBDIRS[name]:
        folder = data_dir / sub if sub else data_dir
        looked.append(str(folder))
        img_stem, lab_stem = _IDX_FILES[split]
        pi, pl = _find_file(folder, img_stem), _find_file(folder, lab_stem)
        if pi is None or pl is None:
            continue
        x = read_idx(pi)
        y = read_idx(pl)
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise DatasetError(f"{pi}: corrupt {name}: {x.shape} images vs {y.shape} labels")
        x = x.astype(np.uint8)[:, None, :, :]
        y = y.astype(np.int64)
        if y.size and (y.min() < 0 or y.max() > 9):
            raise DatasetError(f"{pl}: corrupt {name} labels (outside 0..9)")
        classes = FASHION_CLASSES if name == "fashion_mnist" else tuple(str(i) for i in range(10))
        stats = ((0.1307,), (0.3081,)) if name == "mnist" else ((0.2860,), (0.3530,))
        return ArrayDataset(name, x, y, classes, stats[0], stats[1], source=str(pi))
    img_stem, lab_stem = _IDX_FILES[split]
    raise DatasetError(
        f"dataset {name!r}: no IDX files {img_stem}[.gz] and {lab_stem}[.gz] found in "
        f"{', '.join(looked)}; pass --data-dir, or use --dataset synthetic_mnist (offline)"
    )


# ----------------------------------------------------------------------------- CIFAR-10

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _unpickle_batch(blob: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = pickle.loads(blob, encoding="bytes")
        data = d[b"data"] if b"data" in d else d["data"]
        labels = d[b"labels"] if b"labels" in d else d["labels"]
        x = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(labels, dtype=np.int64)
    except Exception as exc:  # pickle/format errors have many types
        raise DatasetError(f"{where}: corrupt CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if x.shape[0] != y.shape[0]:
        raise DatasetError(f"{where}: corrupt CIFAR-10 batch: {x.shape[0]} images vs {y.shape[0]} labels")
    return x, y


def write_cifar_batch(path: str | Path, x: np.ndarray, y: Sequence[int]) -> Path:
    """Write images ``(n, 3, 32, 32)`` and labels as one CIFAR-10 python batch (for tests)."""
    path = Path(path)
    d = {b"batch_label": b"edgesplit", b"labels": [int(v) for v in y],
         b"data": np.ascontiguousarray(x, dtype=np.uint8).reshape(len(x), -1), b"filenames": []}
    path.write_bytes(pickle.dumps(d, protocol=2))
    return path


def read_cifar_python(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read ``data_batch_1..5`` (train) or ``test_batch`` (test) from ``folder``."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for n in names:
        p = folder / n
        if not p.is_file():
            raise DatasetError(f"dataset 'cifar10': python batch {n} missing in {folder}")
        x, y = _unpickle_batch(p.read_bytes(), str(p))
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _decode_image(blob: bytes, where: str, size: int, channels: int) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        raise DatasetError("reading image files needs Pillow: pip install pillow") from None
    try:
        with Image.open(io.BytesIO(blob)) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as exc:  # PIL raises several types
        raise DatasetError(f"{where}: corrupt image ({type(exc).__name__}: {exc})") from None
    return arr[None, :, :] if channels == 1 else arr.transpose(2, 0, 1)


def _class_order(names: Iterable[str], known: Sequence[str] | None) -> list[str]:
    names = sorted(set(names))
    if known is not None and set(names) <= set(known):
        return [c for c in known if c in names] if len(names) < len(known) else list(known)
    return names


def read_image_folder(root: str | Path, size: int = 32, channels: int = 3,
                      classes: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read an ImageFolder tree ``root/<class>/<image>``; images are resized to ``size`` if needed.

    Class indices follow ``classes`` when given (and every folder is one of them), else the
    sorted folder names. Returns ``(x uint8 (n, C, size, size), y int64, class names)``.
    """
    root = Path(root)
    dirs = [d for d in root.iterdir() if d.is_dir()] if root.is_dir() else []
    if not dirs:
        raise DatasetError(f"{root}: no class folders (expected {root}/<class>/<image>)")
    order = _class_order((d.name for d in dirs), classes)
    index = {c: i for i, c in enumerate(order)}
    xs, ys = [], []
    for d in sorted(dirs, key=lambda p: index[p.name]):
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("._"):
                xs.append(_decode_image(f.read_bytes(), str(f), size, channels))
                ys.append(index[d.name])
    if not xs:
        raise DatasetError(f"{root}: class folders hold no images ({', '.join(IMAGE_SUFFIXES)})")
    return np.stack(xs), np.asarray(ys, dtype=np.int64), order


def read_image_archive(path: str | Path, split: str, size: int = 32, channels: int = 3,
                       classes: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read the ``split`` part of an ImageFolder tree stored in a ``.tar``/``.tar.gz`` archive.

    Members ``.../<split>/<class>/<image>`` are decoded straight from the archive (one pass, no
    extraction). Returns ``(x, y, class names)`` as :func:`read_image_folder`.
    """
    path = Path(path)
    items: list[tuple[str, str, bytes]] = []
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                parts = m.name.replace("\\", "/").split("/")
                if (len(parts) < 3 or parts[-3] != split or parts[-1].startswith("._")
                        or not parts[-1].lower().endswith(IMAGE_SUFFIXES)):
                    continue
                f = tar.extractfile(m)
                if f is not None:
                    items.append((parts[-2], parts[-1], f.read()))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: corrupt or unreadable archive ({exc})") from None
    if not items:
        raise DatasetError(f"{path}: no images under <...>/{split}/<class>/ in the archive")
    order = _class_order((c for c, _, _ in items), classes)
    index = {c: i for i, c in enumerate(order)}
    items.sort(key=lambda t: (index[t[0]], t[1]))
    x = np.stack([_decode_image(b, f"{path}:{split}/{c}/{n}", size, channels) for c, n, b in items])
    y = np.asarray([index[c] for c, _, _ in items], dtype=np.int64)
    return x, y, order


def _read_cifar_python_archive(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                base = m.name.rsplit("/", 1)[-1]
                if m.isfile() and base in names:
                    f = tar.extractfile(m)
                    if f is not None:
                        found[base] = f.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: corrupt or unreadable archive ({exc})") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise DatasetError(f"{path}: CIFAR-10 python archive lacks {', '.join(missing)}")
    parts = [_unpickle_batch(found[n], f"{path}:{n}") for n in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _archive_kind(path: Path) -> str:
    """'python' for the official CIFAR-10 python archive, else 'images'."""
    try:
        with tarfile.open(path, "r:*") as tar:
            for i, m in enumerate(tar):
                if m.name.rsplit("/", 1)[-1] in ("data_batch_1", "test_batch", "batches.meta"):
                    return "python"
                if m.isfile() and m.name.lower().endswith(IMAGE_SUFFIXES):
                    return "images"
                if i > 200:
                    break
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: corrupt or unreadable archive ({exc})") from None
    return "images"


def _cifar_sources(data_dir: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """Candidate CIFAR-10 sources under ``data_dir``: (kind, path) in order of preference."""
    found: list[tuple[str, Path]] = []
    looked: list[str] = []
    if data_dir.is_file():
        looked.append(str(data_dir))
        if tarfile.is_tarfile(data_dir):
            found.append(("archive", data_dir))
        return found, looked
    for sub in ("", "cifar-10-batches-py", "cifar10/cifar-10-batches-py", "cifar10"):
        folder = data_dir / sub if sub else data_dir
        looked.append(f"{folder}/data_batch_1")
        if (folder / "data_batch_1").is_file() or (folder / "test_batch").is_file():
            found.append(("python", folder))
    for sub in ("", "cifar10", "cifar10/cifar10", "cifar-10", "CIFAR-10-images"):
        folder = data_dir / sub if sub else data_dir
        looked.append(f"{folder}/train/<class>/")
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            found.append(("folder", folder))
    for sub in ("", "cifar10"):
        folder = data_dir / sub if sub else data_dir
        looked.append(f"{folder}/*.tar.gz")
        if folder.is_dir():
            for p in sorted(folder.glob("*.tar.gz")) + sorted(folder.glob("*.tgz")) + sorted(folder.glob("*.tar")):
                if "cifar" in p.name.lower():
                    found.append(("archive", p))
    return found, looked


def load_cifar10(data_dir: Path, split: str, cache: Path | None = None) -> ArrayDataset:
    """CIFAR-10 ``split`` from python batches, an ImageFolder tree or an archive under ``data_dir``."""
    sources, looked = _cifar_sources(data_dir)
    if not sources:
        raise DatasetError(
            "dataset 'cifar10': found no CIFAR-10 python batches (data_batch_1..5, test_batch), "
            "ImageFolder tree (train/<class>/*.jpg, test/<class>/...) or archive (*.tar.gz) in "
            f"{'; '.join(looked)}; pass --data-dir, or use --dataset synthetic (offline)"
        )
    kind, path = sources[0]
    if kind == "python":
        x, y = read_cifar_python(path, split)
        return ArrayDataset("cifar10", x, y, CIFAR10_CLASSES, CIFAR_MEAN, CIFAR_STD, source=str(path))
    cdir = cache_dir(cache)
    key = _source_key(path)
    hit = _cache_load(cdir, "cifar10", key, split)
    if hit is None:
        if kind == "folder":
            x, y, order = read_image_folder(path / split, 32, 3, CIFAR10_CLASSES)
        elif _archive_kind(path) == "python":
            x, y = _read_cifar_python_archive(path, split)
            order = list(CIFAR10_CLASSES)
        else:
            x, y, order = read_image_archive(path, split, 32, 3, CIFAR10_CLASSES)
        if list(order) != list(CIFAR10_CLASSES):
            raise DatasetError(f"{path}: class folders {order} are not the 10 CIFAR-10 classes")
        _cache_save(cdir, "cifar10", key, split, x, y)
    else:
        x, y = hit
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DatasetError(f"{path}: corrupt CIFAR-10 labels (outside 0..9)")
    return ArrayDataset("cifar10", x, y, CIFAR10_CLASSES, CIFAR_MEAN, CIFAR_STD, source=str(path))


# ----------------------------------------------------------------------------- synthetic


def make_synthetic(n: int, shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10,
                   seed: int = 0, split: str = "train", separation: float = 0.45, n_basis: int = 24,
                   noise: float = 0.5, max_shift: int = 3) -> ArrayDataset:
    """An offline, learnable image dataset with overlapping classes.

    ``n_basis`` fixed smooth random patterns (from ``seed``) span the images. Class ``k`` has a
    latent mean ``m_k ~ N(0, separation^2 I)``; a sample of class ``y`` draws its latent
    ``z ~ N(m_y, I)``, its image is ``sum_j z_j B_j`` shifted by up to ``max_shift`` pixels
    (cyclically), with a random contrast and brightness, plus Gaussian pixel noise of std
    ``noise``. Classes overlap (Bayes accuracy well below 1 for the default separation), so
    accuracy rises over several rounds instead of jumping to 100%.

    Train and test draw different samples of the same classes. Deterministic for given arguments;
    generated in chunks, so memory stays at the ``uint8`` result (at most
    :data:`SYNTHETIC_MAX` samples).
    """
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= SYNTHETIC_MAX:
        raise DatasetError(f"synthetic: size must be an integer in 1..{SYNTHETIC_MAX}, got {n!r}")
    c, h, w = shape
    base_rng = np.random.default_rng([seed, 7919])
    # smooth bases: low-resolution noise upsampled (nearest), then a 3x3 box blur, unit std
    low = base_rng.standard_normal((n_basis, c, 8, 8))
    basis = low.repeat(-(-h // 8), axis=2).repeat(-(-w // 8), axis=3)[:, :, :h, :w]
    k = np.ones(3) / 3.0
    for ax in (2, 3):
        basis = np.apply_along_axis(lambda v: np.convolve(v, k, mode="same"), ax, basis)
    basis = (basis - basis.mean(axis=(1, 2, 3), keepdims=True)) / basis.std(axis=(1, 2, 3), keepdims=True)
    basis = (basis / np.sqrt(n_basis)).reshape(n_basis, -1).astype(np.float32)
    means = base_rng.normal(0.0, separation, (num_classes, n_basis)).astype(np.float32)
    rng = np.random.default_rng([seed, 1 if split == "train" else 2, int(n)])
    y = rng.integers(0, num_classes, n)
    x = np.empty((n, c, h, w), dtype=np.uint8)
    rows = np.arange(h)[:, None]
    cols = np.arange(w)[None, :]
    for a in range(0, n, 4096):
        b = min(n, a + 4096)
        m = b - a
        z = means[y[a:b]] + rng.standard_normal((m, n_basis), dtype=np.float32)
        img = (z @ basis).reshape(m, c, h, w)
        if max_shift > 0:
            sy = rng.integers(-max_shift, max_shift + 1, m)
            sx = rng.integers(-max_shift, max_shift + 1, m)
            ri = (rows[None] - sy[:, None, None]) % h  # np.roll by (sy, sx)
            ci = (cols[None] - sx[:, None, None]) % w
            img = img[np.arange(m)[:, None, None, None], np.arange(c)[None, :, None, None],
                      ri[:, None, :, :], ci[:, None, :, :]]
        contrast = rng.uniform(0.7, 1.3, (m, 1, 1, 1)).astype(np.float32)
        bright = rng.normal(0.0, 0.2, (m, 1, 1, 1)).astype(np.float32)
        img = img * contrast + bright + noise * rng.standard_normal(img.shape, dtype=np.float32)
        x[a:b] = np.clip(127.5 + 40.0 * img, 0, 255).astype(np.uint8)
    mean, std = channel_stats(x)
    name = "synthetic" if c == 3 else "synthetic_mnist"
    return ArrayDataset(name, x, y.astype(np.int64), tuple(f"class{i}" for i in range(num_classes)),
                        mean, std, source=f"synthetic(seed={seed})")


SYNTHETIC_MAX = 200_000
SYNTHETIC_SIZES = {"train": 10000, "test": 2000}


# ----------------------------------------------------------------------------- entry point


def load_dataset(name: str, split: str = "train", data_dir: str | Path | None = None,
                 cache: str | Path | None = None, seed: int = 0, synthetic_size: int | None = None
                 ) -> ArrayDataset:
    """Load ``split`` ('train' or 'test') of dataset ``name`` (see :data:`DATASETS`).

    ``data_dir`` is where files are searched (default ``$EDGESPLIT_DATA``, else ``./data``);
    ``cache`` the decode cache folder (see :func:`cache_dir`). The synthetic datasets need no
    files: ``seed`` fixes their patterns and ``synthetic_size`` their size (10,000 train, 2,000 test).
    """
    if split not in ("train", "test"):
        raise DatasetError(f"split: must be 'train' or 'test', got {split!r}")
    if name not in ZOO_DATASET:
        raise DatasetError(f"dataset: unknown {name!r}; choose one of {', '.join(DATASETS)}")
    if name in ("synthetic", "synthetic_mnist"):
        n = synthetic_size or SYNTHETIC_SIZES[split]
        shape = (3, 32, 32) if name == "synthetic" else (1, 28, 28)
        return make_synthetic(n, shape, seed=seed, split=split)
    folder = Path(data_dir) if data_dir is not None else Path(os.environ.get("EDGESPLIT_DATA", "data"))
    if not folder.exists():
        raise DatasetError(
            f"dataset {name!r}: data folder {folder} does not exist; pass --data-dir DIR "
            f"(or set EDGESPLIT_DATA), or use --dataset {'synthetic' if name == 'cifar10' else 'synthetic_mnist'} (offline)"
        )
    if name == "cifar10":
        return load_cifar10(folder, split, cache)
    return load_idx_dataset(name, folder, split)


@lru_cache(maxsize=8)
def get_dataset(name: str, split: str = "train", data_dir: str | Path | None = None,
                synthetic_size: int | None = None, seed: int = 0) -> ArrayDataset:
    """:func:`load_dataset` through one per-process cache (the one lookup that ``edgesplit train``,
    the training env and the experiments share: a dataset is decoded once per process). The
    returned dataset is shared: treat it as read-only (``subset``/``head`` make copies)."""
    return load_dataset(name, split, None if data_dir is None else str(data_dir), seed=seed,
                        synthetic_size=synthetic_size)


def load_train_test(name: str, data_dir: str | Path | None = None, cache: str | Path | None = None,
                    seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    """Both splits of ``name`` (the test split uses the train split's normalisation)."""
    train = load_dataset(name, "train", data_dir, cache, seed)
    test = load_dataset(name, "test", data_dir, cache, seed)
    test.mean, test.std = train.mean, train.std
    return train, test


# ----------------------------------------------------------------------------- device splits


def split_indices(labels: np.ndarray, counts: Sequence[int], alpha: float | None = None,
                  seed: int | None = 0, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Disjoint index sets, one per device, with ``counts[i]`` samples each.

    ``alpha=None``: IID (a random permutation cut into pieces). ``alpha > 0``: each device draws
    class proportions from Dirichlet(alpha * 1); its samples follow them as far as the classes
    last (a class that runs out is replaced by the device's other classes, in proportion).
    Small alpha gives few classes per device; large alpha approaches IID.
    """
    labels = np.asarray(labels)
    counts = [int(c) for c in counts]
    if any(c < 0 for c in counts):
        raise DatasetError(f"samples: per-device counts must be >= 0, got {counts}")
    total = sum(counts)
    if total > len(labels):
        raise DatasetError(
            f"samples: the devices need {total} samples in all but the dataset has {len(labels)}; "
            "lower --samples-per-device or the number of devices"
        )
    rng = rng if rng is not None else np.random.default_rng(seed)
    if alpha is None:
        perm = rng.permutation(len(labels))
        out, start = [], 0
        for c in counts:
            out.append(np.sort(perm[start:start + c]))
            start += c
        return out
    if not (alpha > 0 and np.isfinite(alpha)):
        raise DatasetError(f"non_iid alpha: must be a finite number > 0, got {alpha!r}")
    classes = np.unique(labels)
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in classes]
    out = []
    for need in counts:
        p = rng.dirichlet(np.full(len(classes), float(alpha)))
        p = np.maximum(p, 1e-12)
        want = rng.multinomial(need, p / p.sum())
        take = np.zeros(len(classes), dtype=np.int64)
        remaining = need
        while remaining > 0:
            avail = np.array([len(pools[k]) - take[k] for k in range(len(classes))])
            grant = np.minimum(want, avail)
            take += grant
            remaining -= int(grant.sum())
            if remaining <= 0:
                break
            open_ = avail - grant > 0
            q = np.where(open_, p, 0.0)
            q = q / q.sum() if q.sum() > 0 else open_ / open_.sum()
            want = rng.multinomial(remaining, q)
        idx = []
        for k in range(len(classes)):
            idx.extend(pools[k][:take[k]])
            pools[k] = pools[k][take[k]:]
        out.append(np.sort(np.asarray(idx, dtype=np.int64)))
    return out


def split_dataset(data: ArrayDataset, counts: Sequence[int], alpha: float | None = None,
                  seed: int | None = 0, rng: np.random.Generator | None = None) -> list[ArrayDataset]:
    """``data`` split over devices by :func:`split_indices`."""
    return [data.subset(ix) for ix in split_indices(data.y, counts, alpha, seed, rng)]
