"""Dataset checks, splits and our own readers (IDX and restricted CIFAR pickles).

Every file is generated here in the exact on-disk format of the real datasets (IDX magic
numbers and big-endian dimensions; CIFAR python batches as pickled dicts with bytes keys, one
of them byte-for-byte the way Python 2 wrote the originals), plus corrupt, truncated and
malicious variants.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from evaluators.specs import DatasetError, InputError, NetworkSpec, SpecError, StageSpec, TaskSpec
from evaluators.training import (
    DatasetFileError,
    check_dataset_files,
    dataset_info,
    load_splits,
    train,
)
from evaluators.training.datasets import read_cifar_batch, read_idx, stratified_split

MNIST_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# --------------------------------------------------------------------------- file writers


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def write(path: Path, data: bytes) -> Path:
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_mnist(root: Path, n_train: int = 60, n_test: int = 20, gz_train_images: bool = True,
               seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, arr in arrays.items():
        gz = gz_train_images and name == "train-images-idx3-ubyte"
        write(root / (name + (".gz" if gz else "")), idx_bytes(arr))
    return arrays


def py2_cifar_pickle(data: np.ndarray, labels: list[int], label_key: bytes = b"labels") -> bytes:
    """A batch exactly as Python 2's cPickle (protocol 2) wrote the original CIFAR files.

    Keys and the dtype/array state are Python 2 ``str`` (SHORT_BINSTRING / BINSTRING), the
    array is rebuilt with ``numpy.core.multiarray._reconstruct`` (the numpy 1 name).
    """

    def s(b: bytes) -> bytes:  # py2 str
        if len(b) < 256:
            return b"U" + bytes([len(b)]) + b
        return b"T" + struct.pack("<I", len(b)) + b

    def i(v: int) -> bytes:
        if 0 <= v < 256:
            return b"K" + bytes([v])
        if 0 <= v < 65536:
            return b"M" + struct.pack("<H", v)
        return b"J" + struct.pack("<i", v)

    n, width = data.shape
    dtype = (b"cnumpy\ndtype\n" + s(b"u1") + i(0) + i(1) + b"\x87R"
             + b"(" + i(3) + s(b"|") + b"NNN" + i(-1) + i(-1) + i(0) + b"tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + i(0) + b"\x85"
             + s(b"b") + b"\x87R" + b"(" + i(1) + i(n) + i(width) + b"\x86" + dtype + b"\x89"
             + s(data.astype(np.uint8).tobytes()) + b"tb")
    items = s(b"batch_label") + s(b"training batch 1 of 5") + s(b"data") + array
    items += s(label_key) + b"](" + b"".join(i(v) for v in labels) + b"e"
    return b"\x80\x02}(" + items + b"u."


def cifar_dict(n: int, classes: int, label_key: bytes, seed: int) -> dict[bytes, object]:
    rng = np.random.default_rng(seed)
    d: dict[bytes, object] = {
        b"batch_label": b"batch",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: [int(v) for v in np.arange(n) % classes],
        b"filenames": [f"img_{k}.png".encode() for k in range(n)],
    }
    if label_key == b"fine_labels":
        d[b"coarse_labels"] = [0] * n
    return d


def make_cifar10(root: Path, n: int = 20, subdir: bool = True, protocol: int = 2) -> Path:
    where = root / "cifar-10-batches-py" if subdir else root
    where.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        d = cifar_dict(n, 10, b"labels", seed=k)
        if protocol == -2:  # Python 2 byte stream
            blob = py2_cifar_pickle(d[b"data"], d[b"labels"])  # type: ignore[arg-type]
        else:
            blob = pickle.dumps(d, protocol=protocol)
        (where / name).write_bytes(blob)
    return where


def make_cifar100(root: Path, n: int = 200) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train").write_bytes(pickle.dumps(cifar_dict(n, 100, b"fine_labels", 1), 2))
    (root / "test").write_bytes(pickle.dumps(cifar_dict(n // 2, 100, b"fine_labels", 2), 2))


# --------------------------------------------------------------------------- info / checks


def test_dataset_info() -> None:
    assert dataset_info("digits") == (1, 8, 10)
    assert dataset_info("mnist") == (1, 28, 10)
    assert dataset_info("fashion_mnist") == (1, 28, 10)
    assert dataset_info("cifar10") == (3, 32, 10)
    assert dataset_info("cifar100") == (3, 32, 100)
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'"):
        dataset_info("imagenet")


def test_check_dataset_files(tmp_path: Path) -> None:
    assert check_dataset_files("digits", None) == []
    assert check_dataset_files("mnist", None) == ["data_dir is required for dataset 'mnist'"]
    assert "does not exist" in check_dataset_files("cifar10", str(tmp_path / "nope"))[0]
    assert check_dataset_files("nope", None)[0].startswith("unknown dataset 'nope'")
    problems = check_dataset_files("mnist", str(tmp_path))
    assert problems == [f"missing files in {tmp_path}: " + ", ".join(n + "[.gz]" for n in
                                                                     MNIST_NAMES)]
    make_mnist(tmp_path)
    assert check_dataset_files("mnist", str(tmp_path)) == []
    assert check_dataset_files("fashion_mnist", str(tmp_path)) == []
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    assert check_dataset_files("mnist", str(tmp_path)) == [
        f"missing files in {tmp_path}: t10k-labels-idx1-ubyte[.gz]"]


def test_check_cifar_files(tmp_path: Path) -> None:
    where = make_cifar10(tmp_path)
    assert check_dataset_files("cifar10", str(tmp_path)) == []
    os.remove(where / "data_batch_3")
    assert check_dataset_files("cifar10", str(tmp_path)) == [
        f"missing files in {where}: data_batch_3"]
    assert "train, test" in check_dataset_files("cifar100", str(tmp_path))[0]


def test_check_does_not_read_contents(tmp_path: Path) -> None:
    for name in MNIST_NAMES:
        (tmp_path / name).write_bytes(b"garbage")
    assert check_dataset_files("mnist", str(tmp_path)) == []


def test_missing_files_raise_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="missing files"):
        load_splits(TaskSpec(dataset="mnist", data_dir=str(tmp_path)))
    with pytest.raises(DatasetError, match="data_dir is required"):
        load_splits(TaskSpec(dataset="cifar100"))


# --------------------------------------------------------------------------- splits


def test_stratified_split() -> None:
    y = np.repeat(np.arange(5), [10, 20, 7, 3, 40])
    rest, taken = stratified_split(y, 16, np.random.default_rng(0))
    assert len(taken) == 16 and len(rest) == len(y) - 16
    assert np.array_equal(np.sort(np.concatenate([rest, taken])), np.arange(len(y)))
    for c, size in enumerate([10, 20, 7, 3, 40]):
        assert abs((y[taken] == c).sum() - size * 16 / len(y)) < 1
    again = stratified_split(y, 16, np.random.default_rng(0))
    assert np.array_equal(again[1], taken)
    assert not np.array_equal(stratified_split(y, 16, np.random.default_rng(1))[1], taken)
    assert len(stratified_split(y, 0, np.random.default_rng(0))[1]) == 0


def _digits_raw(x: torch.Tensor, levels: np.ndarray) -> np.ndarray:
    """Undo the (monotone, per-channel) normalization of digits: value -> its 0..16 level."""
    return np.searchsorted(levels, x.reshape(len(x), -1).numpy())


def test_digits_splits_partition_stratified_seeded() -> None:
    task = TaskSpec()
    s = load_splits(task)
    n = 1797
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (n - 2 * 359, 359, 359)
    assert s.train_x.shape[1:] == (1, 8, 8) and s.train_x.dtype == torch.float32
    assert s.train_y.dtype == torch.int64 and s.info == (1, 8, 10) and not s.augment
    # normalized with the training split's statistics
    assert abs(float(s.train_x.mean())) < 1e-4 and abs(float(s.train_x.std()) - 1) < 1e-3
    # the three splits are a partition of the whole set (as a multiset of (image, label))
    levels = np.unique(s.train_x.numpy())
    assert len(levels) == 17
    rows = np.concatenate([
        np.column_stack([_digits_raw(x, levels), y.numpy()])
        for x, y in ((s.train_x, s.train_y), (s.val_x, s.val_y), (s.test_x, s.test_y))])
    x_all, y_all = load_digits(return_X_y=True)
    full = np.column_stack([x_all.astype(np.int64), y_all])
    assert np.array_equal(np.unique(rows, axis=0, return_counts=True)[1].sum(), n)
    assert np.array_equal(rows[np.lexsort(rows.T[::-1])], full[np.lexsort(full.T[::-1])])
    # stratified: every class is within one sample of its share
    counts = np.bincount(y_all)
    for split in (s.val_y, s.test_y):
        got = np.bincount(split.numpy(), minlength=10)
        assert np.all(np.abs(got - counts * 359 / n) < 2)
    # seeded
    again = load_splits(task)
    assert torch.equal(again.val_x, s.val_x) and torch.equal(again.test_y, s.test_y)
    other = load_splits(TaskSpec(split_seed=1))
    assert not torch.equal(other.test_x, s.test_x)


def test_bad_fractions() -> None:
    with pytest.raises(SpecError, match="val_fraction"):
        load_splits(TaskSpec(val_fraction=0.6, test_fraction=0.5))
    with pytest.raises(SpecError):
        load_splits(TaskSpec(val_fraction=0.0))


# --------------------------------------------------------------------------- IDX


def test_read_idx_plain_and_gz(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    plain = write(tmp_path / "a-idx3-ubyte", idx_bytes(arr))
    gz = write(tmp_path / "a-idx3-ubyte.gz", idx_bytes(arr))
    assert gz.read_bytes()[:2] == b"\x1f\x8b"
    assert plain.read_bytes()[:4] == b"\x00\x00\x08\x03"
    for p in (plain, gz):
        got = read_idx(str(p), expect_magic=0x803)
        assert got.dtype == np.uint8 and np.array_equal(got, arr)
    shorts = np.array([[-2, 300], [7, -32768]], dtype=np.int16)
    assert np.array_equal(read_idx(str(write(tmp_path / "s", idx_bytes(shorts, 0x0B)))), shorts)


def test_mnist_load_splits(tmp_path: Path) -> None:
    arrays = make_mnist(tmp_path)
    for dataset in ("mnist", "fashion_mnist"):
        s = load_splits(TaskSpec(dataset=dataset, data_dir=str(tmp_path)))
        assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (48, 12, 20)
        assert s.test_x.shape == (20, 1, 28, 28) and s.info == (1, 28, 10) and not s.augment
        assert np.array_equal(s.test_y.numpy(), arrays["t10k-labels-idx1-ubyte"])
        val_counts = np.bincount(s.val_y.numpy(), minlength=10)  # share 1.2 per class
        assert val_counts.min() >= 1 and val_counts.max() <= 2
        # the official test images, in order, up to the affine normalization
        raw = arrays["t10k-images-idx3-ubyte"].astype(np.float64).ravel()
        got = s.test_x.numpy().astype(np.float64).ravel()
        assert np.corrcoef(raw, got)[0, 1] > 0.9999


@pytest.mark.parametrize(
    ("name", "mutate", "message"),
    [
        ("train-images-idx3-ubyte", lambda b: b[:-5], "truncated"),
        ("train-images-idx3-ubyte", lambda b: b[:6], "truncated: header"),
        ("train-images-idx3-ubyte", lambda b: b[:3], "too short"),
        ("train-images-idx3-ubyte", lambda b: b + b"xx", "2 unexpected bytes"),
        ("train-images-idx3-ubyte", lambda b: b"\x01" + b[1:], "bad magic number"),
        ("train-images-idx3-ubyte", lambda b: b[:2] + b"\x08\x01" + b[4:8] + b[16:],
         "expected 0x00000803"),
        ("train-labels-idx1-ubyte", lambda b: b[:-1], "truncated"),
        ("t10k-labels-idx1-ubyte", lambda b: b[:2] + b"\x77" + b[3:], "bad magic number"),
    ],
)
def test_corrupt_idx(tmp_path: Path, name: str, mutate: object, message: str) -> None:
    arrays = make_mnist(tmp_path, gz_train_images=False)
    (tmp_path / name).write_bytes(mutate(idx_bytes(arrays[name])))  # type: ignore[operator]
    with pytest.raises(DatasetFileError, match=message) as err:
        load_splits(TaskSpec(dataset="mnist", data_dir=str(tmp_path)))
    assert isinstance(err.value, InputError) and isinstance(err.value, DatasetError)
    assert err.value.path == str(tmp_path) and err.value.key == name
    assert str(err.value).startswith(f"{tmp_path}: {name}: ")


def test_corrupt_and_truncated_gz(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    gz = tmp_path / "train-images-idx3-ubyte.gz"
    blob = gz.read_bytes()
    gz.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetFileError, match="gzip"):
        load_splits(TaskSpec(dataset="mnist", data_dir=str(tmp_path)))
    gz.write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(DatasetFileError, match="train-images-idx3-ubyte.gz: corrupt"):
        load_splits(TaskSpec(dataset="mnist", data_dir=str(tmp_path)))


def test_idx_semantic_errors(tmp_path: Path) -> None:
    make_mnist(tmp_path, gz_train_images=False)
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(np.zeros(19, np.uint8)))
    with pytest.raises(DatasetFileError, match="19 labels for 20 images"):
        load_splits(TaskSpec(dataset="mnist", data_dir=str(tmp_path)))
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(np.full(20, 12, np.uint8)))
    with pytest.raises(DatasetFileError, match="label 12 out of range"):
        load_splits(TaskSpec(dataset="mnist", data_dir=str(tmp_path)))
    write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(np.zeros((20, 27, 27), np.uint8)))
    with pytest.raises(DatasetFileError, match="20x27x27, expected Nx28x28"):
        load_splits(TaskSpec(dataset="mnist", data_dir=str(tmp_path)))


# --------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("protocol", [-2, 2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_batches(tmp_path: Path, protocol: int) -> None:
    where = make_cifar10(tmp_path, protocol=protocol)
    d = cifar_dict(20, 10, b"labels", seed=0)
    x, y = read_cifar_batch(str(where / "data_batch_1"), label_key="labels", num_classes=10)
    data = d[b"data"]
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.uint8
    assert np.array_equal(x[3, 0], data[3, :1024].reshape(32, 32))  # type: ignore[index]
    assert np.array_equal(x[3, 2], data[3, 2048:].reshape(32, 32))  # type: ignore[index]
    assert y.tolist() == d[b"labels"]
    s = load_splits(TaskSpec(dataset="cifar10", data_dir=str(tmp_path)))
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (80, 20, 20)
    assert s.train_x.shape[1:] == (3, 32, 32) and s.info == (3, 32, 10) and s.augment
    per_channel = s.train_x.transpose(0, 1).reshape(3, -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(3), atol=1e-4)


def test_cifar10_without_subdir_and_cifar100(tmp_path: Path) -> None:
    make_cifar10(tmp_path / "c10", subdir=False)
    assert len(load_splits(TaskSpec(dataset="cifar10", data_dir=str(tmp_path / "c10"))).test_y)
    make_cifar100(tmp_path / "c100" / "cifar-100-python")
    s = load_splits(TaskSpec(dataset="cifar100", data_dir=str(tmp_path / "c100")))
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (160, 40, 100)
    assert s.info == (3, 32, 100) and int(s.train_y.max()) < 100


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self) -> tuple[object, ...]:
        return (eval, ("__import__('os').getpid()",))


def test_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    where = make_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    evil = {b"data": _Evil(marker), b"labels": [0]}
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        (where / "data_batch_2").write_bytes(pickle.dumps(evil, protocol=protocol))
        with pytest.raises(DatasetFileError, match=r"refusing to load object (posix|nt)\.system"):
            load_splits(TaskSpec(dataset="cifar10", data_dir=str(tmp_path)))
        assert not marker.exists()
    (where / "data_batch_2").write_bytes(pickle.dumps({b"data": _EvalEvil()}, protocol=2))
    refused_eval = r"refusing to load object (builtins|__builtin__)\.eval"
    with pytest.raises(DatasetFileError, match=refused_eval):
        load_splits(TaskSpec(dataset="cifar10", data_dir=str(tmp_path)))
    # a Python 2 style GLOBAL opcode for a module we do not allow
    (where / "data_batch_2").write_bytes(b"\x80\x02csubprocess\nPopen\n.")
    with pytest.raises(DatasetFileError, match=r"refusing to load object subprocess\.Popen"):
        read_cifar_batch(str(where / "data_batch_2"), label_key="labels", num_classes=10)
    # object arrays could smuggle objects: refused too
    (where / "data_batch_2").write_bytes(
        pickle.dumps({b"data": np.array([1, "x"], dtype=object), b"labels": [0]}, protocol=2))
    with pytest.raises(DatasetFileError, match="refusing to load object arrays"):
        read_cifar_batch(str(where / "data_batch_2"), label_key="labels", num_classes=10)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (lambda blob: blob[: len(blob) // 2], "corrupt or truncated pickle"),
        (lambda blob: b"", "corrupt or truncated pickle"),
        (lambda blob: b"hello, world", "corrupt or truncated pickle"),
        (lambda blob: pickle.dumps([1, 2, 3], 2), "expected a pickled dict, got list"),
        (lambda blob: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}, 2),
         "missing key b'labels'"),
        (lambda blob: pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, 2),
         r"shape \(N, 3072\)"),
        (lambda blob: pickle.dumps({b"data": np.zeros((2, 3072), np.float32),
                                    b"labels": [0, 1]}, 2), "uint8"),
        (lambda blob: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, 2),
         "has shape"),
        (lambda blob: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8),
                                    b"labels": [0, 10]}, 2), r"values must be in 0\.\.9"),
    ],
)
def test_corrupt_cifar(tmp_path: Path, payload: object, message: str) -> None:
    where = make_cifar10(tmp_path)
    blob = (where / "test_batch").read_bytes()
    (where / "test_batch").write_bytes(payload(blob))  # type: ignore[operator]
    with pytest.raises(DatasetFileError, match=message) as err:
        load_splits(TaskSpec(dataset="cifar10", data_dir=str(tmp_path)))
    assert err.value.key == "test_batch" and err.value.path == str(where)


def test_dataset_file_error_pickles() -> None:
    err = DatasetFileError("/d", "f", "bad")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is DatasetFileError and str(back) == "/d: f: bad"


# --------------------------------------------------------------------------- smoke training


def test_train_on_generated_mnist_and_cifar(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    make_mnist(tmp_path / "m")
    make_cifar10(tmp_path / "c", n=8)
    for dataset, root in (("mnist", "m"), ("cifar10", "c")):
        c, hw, k = dataset_info(dataset)
        spec = NetworkSpec("plain_cnn", c, hw, k, (StageSpec(1, 4, 3, 2),))
        task = TaskSpec(dataset=dataset, data_dir=str(tmp_path / root), epochs=None, steps=3,
                        batch_size=8, lr=0.05)
        report = train(spec, task)
        assert report.steps == 3 and 0.0 <= report.val_accuracy <= 1.0
