"""Dataset readers (IDX, CIFAR-10 python batches, ImageFolder trees and archives), the synthetic
offline dataset, device splits and the missing/corrupt-dataset messages."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from edgesplit import datasets as ds
from edgesplit.datasets import (
    CIFAR10_CLASSES,
    DatasetError,
    load_dataset,
    load_train_test,
    make_synthetic,
    read_idx,
    split_indices,
    write_cifar_batch,
    write_idx,
)

PIL = pytest.importorskip("PIL.Image")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _images(rng: np.random.Generator, n: int, shape=(3, 32, 32)) -> np.ndarray:
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8)


# ----------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip_and_mnist_loader(tmp_path: Path, gz: bool):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    x_tr, y_tr = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), rng.integers(0, 10, 7).astype(np.uint8)
    x_te, y_te = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), rng.integers(0, 10, 3).astype(np.uint8)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / f"train-images-idx3-ubyte{suffix}", x_tr)
    write_idx(raw / f"train-labels-idx1-ubyte{suffix}", y_tr)
    write_idx(raw / f"t10k-images-idx3-ubyte{suffix}", x_te)
    write_idx(raw / f"t10k-labels-idx1-ubyte{suffix}", y_te)
    np.testing.assert_array_equal(read_idx(raw / f"train-images-idx3-ubyte{suffix}"), x_tr)
    train, test = load_train_test("mnist", tmp_path)
    assert train.x.shape == (7, 1, 28, 28) and test.x.shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(train.x[:, 0], x_tr)
    np.testing.assert_array_equal(test.y, y_te.astype(np.int64))
    assert train.y.dtype == np.int64 and train.num_classes == 10


def test_fashion_mnist_in_its_usual_folder(tmp_path: Path):
    rng = np.random.default_rng(1)
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (4, 28, 28), dtype=np.uint8))
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.array([0, 9, 3, 3], dtype=np.uint8))
    d = load_dataset("fashion_mnist", "test", tmp_path)
    assert len(d) == 4 and d.classes[9] == "ankle-boot"


def test_corrupt_idx_names_the_file(tmp_path: Path):
    p = tmp_path / "train-images-idx3-ubyte"
    write_idx(p, np.zeros((5, 28, 28), dtype=np.uint8))
    p.write_bytes(p.read_bytes()[:-100])  # truncated
    with pytest.raises(DatasetError, match="corrupt IDX.*header says"):
        read_idx(p)
    p.write_bytes(b"not an idx file at all")
    with pytest.raises(DatasetError, match=str(p.name)):
        read_idx(p)


# ----------------------------------------------------------------------------- CIFAR-10 python batches


def _write_python_batches(folder: Path, rng: np.random.Generator, per_batch: int = 3):
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        x, y = _images(rng, per_batch), rng.integers(0, 10, per_batch)
        write_cifar_batch(folder / f"data_batch_{i}", x, y)
        xs.append(x)
        ys.append(y)
    xt, yt = _images(rng, 2), rng.integers(0, 10, 2)
    write_cifar_batch(folder / "test_batch", xt, yt)
    return np.concatenate(xs), np.concatenate(ys), xt, yt


def test_cifar_python_batches(tmp_path: Path):
    x, y, xt, yt = _write_python_batches(tmp_path / "cifar-10-batches-py", np.random.default_rng(2))
    train, test = load_train_test("cifar10", tmp_path)
    np.testing.assert_array_equal(train.x, x)
    np.testing.assert_array_equal(train.y, y)
    np.testing.assert_array_equal(test.x, xt)
    assert train.classes == CIFAR10_CLASSES and train.shape == (3, 32, 32)


def test_cifar_official_python_archive(tmp_path: Path):
    x, y, _, _ = _write_python_batches(tmp_path / "src" / "cifar-10-batches-py", np.random.default_rng(3))
    arc = tmp_path / "data" / "cifar-10-python.tar.gz"
    arc.parent.mkdir()
    with tarfile.open(arc, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    train = load_dataset("cifar10", "train", arc, cache=tmp_path / "cache")
    np.testing.assert_array_equal(train.x, x)
    np.testing.assert_array_equal(train.y, y)


def test_corrupt_cifar_batch_message(tmp_path: Path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_python_batches(folder, np.random.default_rng(4))
    (folder / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DatasetError, match="data_batch_3: corrupt CIFAR-10 python batch"):
        load_dataset("cifar10", "train", tmp_path)


# ----------------------------------------------------------------------------- ImageFolder trees


def _write_tree(root: Path, rng: np.random.Generator, per_class: int = 2) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for split in ("train", "test"):
        xs, ys = [], []
        for label, cls in enumerate(CIFAR10_CLASSES):
            d = root / split / cls
            d.mkdir(parents=True)
            for k in range(per_class):
                img = _images(rng, 1)[0]
                PIL.fromarray(img.transpose(1, 2, 0)).save(d / f"{k:04d}.png")  # lossless
                xs.append(img)
                ys.append(label)
        out[split] = (np.stack(xs), np.asarray(ys))
    return out


def test_image_folder_tree_and_archive_and_cache(tmp_path: Path, monkeypatch):
    truth = _write_tree(tmp_path / "data" / "cifar10", np.random.default_rng(5))
    cache = tmp_path / "cache"
    train = load_dataset("cifar10", "train", tmp_path / "data", cache=cache)
    np.testing.assert_array_equal(train.x, truth["train"][0])
    np.testing.assert_array_equal(train.y, truth["train"][1])
    assert len(list(cache.glob("cifar10-*-train-x.npy"))) == 1
    # the archive form of the same tree, read directly
    arc = tmp_path / "arc" / "cifar10-jpeg.tar.gz"
    arc.parent.mkdir()
    with tarfile.open(arc, "w:gz") as tar:
        tar.add(tmp_path / "data" / "cifar10", arcname="cifar10")
    test = load_dataset("cifar10", "test", arc, cache=cache)
    np.testing.assert_array_equal(test.x, truth["test"][0])
    np.testing.assert_array_equal(test.y, truth["test"][1])

    # a second load comes from the .npy cache: decoding would now fail
    def boom(*a, **k):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(ds, "_decode_image", boom)
    again = load_dataset("cifar10", "test", arc, cache=cache)
    np.testing.assert_array_equal(again.x, test.x)


def test_read_image_folder_generic_resizes_and_greyscale(tmp_path: Path):
    for cls in ("b", "a"):
        (tmp_path / cls).mkdir()
        PIL.new("RGB", (40, 20), (200, 10, 10)).save(tmp_path / cls / "x.jpg")
    x, y, classes = ds.read_image_folder(tmp_path, size=28, channels=1)
    assert classes == ["a", "b"] and x.shape == (2, 1, 28, 28) and y.tolist() == [0, 1]


def test_corrupt_image_names_the_file(tmp_path: Path):
    _write_tree(tmp_path / "cifar10", np.random.default_rng(6), per_class=1)
    bad = tmp_path / "cifar10" / "train" / "cat" / "0000.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"0000\.png: corrupt image"):
        load_dataset("cifar10", "train", tmp_path, cache=tmp_path / "cache")


@pytest.mark.slow
def test_shared_cifar_archive_loads(tmp_path: Path):
    """The workplace's CIFAR-10 JPEG archive: the 10,000 test images decode (about 10 s)."""
    arc = SHARED_DATA / "cifar10" / "cifar10-jpeg.tar.gz"
    if not arc.is_file():
        pytest.skip(f"{arc} not present")
    test = load_dataset("cifar10", "test", SHARED_DATA, cache=tmp_path)
    assert test.x.shape == (10000, 3, 32, 32)
    assert np.bincount(test.y).tolist() == [1000] * 10
    assert 60 < test.x.mean() < 180  # real images, not blank


# ----------------------------------------------------------------------------- missing datasets


def test_missing_cifar_says_what_and_where(tmp_path: Path):
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10", "train", tmp_path)
    msg = str(exc.value)
    assert "\n" not in msg
    for part in ("data_batch_1", "train/<class>", "tar.gz", str(tmp_path), "synthetic"):
        assert part in msg


def test_missing_mnist_and_missing_folder(tmp_path: Path):
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.*MNIST/raw"):
        load_dataset("mnist", "train", tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("fashion_mnist", "train", tmp_path / "nope")
    with pytest.raises(DatasetError, match="unknown 'imagenet'"):
        load_dataset("imagenet")
    assert issubclass(DatasetError, ValueError)


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_is_seeded_offline_and_learnable():
    a = make_synthetic(600, seed=3)
    b = make_synthetic(600, seed=3)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.x.shape == (600, 3, 32, 32) and a.x.dtype == np.uint8
    test = load_dataset("synthetic", "test", seed=3, synthetic_size=300)
    assert not np.array_equal(test.x[:10], a.x[:10])
    # a nearest-class-mean classifier already separates the classes well above chance (0.1)
    means = np.stack([a.x[a.y == c].reshape(-1, 3 * 32 * 32).mean(0) for c in range(10)])
    d = ((test.x.reshape(len(test), -1)[:, None, :].astype(np.float64) - means[None]) ** 2).sum(-1)
    acc = float((d.argmin(1) == test.y).mean())
    assert acc > 0.4
    m = load_dataset("synthetic_mnist", "train", synthetic_size=50)
    assert m.shape == (1, 28, 28)


def test_batches_normalise():
    d = make_synthetic(70, seed=0)
    xs = list(ds.batches(d, 32))
    assert [len(y) for _, y in xs] == [32, 32, 6]
    x = torch.cat([b for b, _ in xs])
    assert x.dtype == torch.float32
    assert abs(float(x.mean())) < 0.2 and abs(float(x.std()) - 1) < 0.2


# ----------------------------------------------------------------------------- device splits


def test_iid_split_counts_disjoint_deterministic():
    labels = np.repeat(np.arange(10), 100)
    parts = split_indices(labels, [100, 250, 50], seed=1)
    assert [len(p) for p in parts] == [100, 250, 50]
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == len(allidx)
    again = split_indices(labels, [100, 250, 50], seed=1)
    assert all(np.array_equal(p, q) for p, q in zip(parts, again))
    # IID: every class shows up on the big device
    assert len(np.unique(labels[parts[1]])) == 10


def test_dirichlet_split_properties():
    labels = np.repeat(np.arange(10), 200)
    counts = [150] * 10
    skewed = split_indices(labels, counts, alpha=0.1, seed=0)
    mild = split_indices(labels, counts, alpha=100.0, seed=0)
    for parts in (skewed, mild):
        assert [len(p) for p in parts] == counts
        allidx = np.concatenate(parts)
        assert len(np.unique(allidx)) == len(allidx)

    def top_share(parts):
        return np.mean([np.bincount(labels[p], minlength=10).max() / len(p) for p in parts])

    assert top_share(skewed) > 0.5 > top_share(mild)
    assert top_share(mild) < 0.2
    # every sample can be handed out even when classes run out
    full = split_indices(labels, [1000, 1000], alpha=0.05, seed=3)
    assert sorted(np.concatenate(full).tolist()) == list(range(2000))


def test_split_errors():
    labels = np.zeros(10, dtype=int)
    with pytest.raises(DatasetError, match="need 20 samples"):
        split_indices(labels, [10, 10])
    with pytest.raises(DatasetError, match="alpha"):
        split_indices(labels, [5], alpha=0.0)
    with pytest.raises(DatasetError, match="alpha"):
        split_indices(labels, [5], alpha=float("nan"))
