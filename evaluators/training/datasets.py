"""Datasets: what they look like, whether their files are there, and our own safe readers.

* ``digits``: scikit-learn's bundled 8x8 digits (offline, no ``data_dir``), scaled 0..16 -> 0..1.
* ``mnist`` / ``fashion_mnist``: the four IDX files (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
  optionally ``.gz``) directly in ``data_dir``, read by :func:`read_idx`.
* ``cifar10``: ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` in
  ``data_dir/cifar-10-batches-py/`` or directly in ``data_dir``; ``cifar100``: ``train`` and
  ``test`` in ``data_dir/cifar-100-python/`` or directly in ``data_dir``. These are the official
  python pickle batches, read with :class:`RestrictedUnpickler`, which only builds dicts, lists
  and numpy arrays: nothing from a file is ever imported or executed.

A file that is there but wrong (bad magic number, truncated, corrupt, refused pickle object)
raises :class:`DatasetFileError` (an :class:`~evaluators.specs.InputError` *and* a
:class:`~evaluators.specs.DatasetError`): ``"<directory>: <file name>: <what is wrong>"``.

This module imports torch only inside :func:`load_splits`, so the cheap checks
(:func:`dataset_info`, :func:`check_dataset_files`) stay cheap.
"""

from __future__ import annotations

import gzip
import io
import math
import operator
import os
import pickle
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from evaluators.specs import DATASETS, DatasetError, InputError, SpecError, TaskSpec

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_DATA_DIRS",
    "DatasetFileError",
    "RestrictedUnpickler",
    "Splits",
    "check_dataset_files",
    "default_data_dir",
    "check_dataset_readable",
    "dataset_info",
    "load_splits",
    "read_cifar_batch",
    "read_idx",
    "stratified_split",
]

# (in_channels, input_hw, num_classes); constants, not state.
_INFO: dict[str, tuple[int, int, int]] = {
    "digits": (1, 8, 10),
    "mnist": (1, 28, 10),
    "fashion_mnist": (1, 28, 10),
    "cifar10": (3, 32, 10),
    "cifar100": (3, 32, 100),
}
_IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6))
                + ("test_batch",)),
    "cifar100": ("cifar-100-python", ("train", "test")),
}
# Where a packaged copy of a dataset lives when the experiment sets no ``data_dir``: Debian's
# ``dataset-fashion-mnist`` installs the original gzipped IDX files of Xiao et al. (2017) there.
DEFAULT_DATA_DIRS: dict[str, tuple[str, str]] = {  # dataset -> (folder, package that fills it)
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist", "dataset-fashion-mnist"),
}


def default_data_dir(dataset: str) -> str | None:
    """The packaged folder of ``dataset`` (``DEFAULT_DATA_DIRS``) when it exists, else None."""
    folder = DEFAULT_DATA_DIRS.get(dataset, (None, None))[0]
    return folder if folder and os.path.isdir(folder) else None


# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetFileError(InputError, DatasetError):
    """A dataset file exists but is wrong: ``"<directory>: <file name>: <what is wrong>"``."""

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across Ray workers
        return (type(self), (self.path, self.key, self.message))


def _fail(path: str, message: str) -> DatasetFileError:
    return DatasetFileError(os.path.dirname(path) or ".", os.path.basename(path), message)


# --------------------------------------------------------------------------- cheap checks


def dataset_info(dataset: str) -> tuple[int, int, int]:
    """``(in_channels, input_hw, num_classes)`` of a dataset, without loading any data.

    Raises:
        DatasetError: unknown dataset name.
    """
    try:
        return _INFO[dataset]
    except KeyError:
        raise DatasetError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}") from None


def _cifar_dir(dataset: str, data_dir: str) -> str:
    sub = os.path.join(data_dir, _CIFAR_FILES[dataset][0])
    return sub if os.path.isdir(sub) else data_dir


def _idx_path(data_dir: str, name: str) -> str | None:
    for candidate in (name, name + ".gz"):
        path = os.path.join(data_dir, candidate)
        if os.path.isfile(path):
            return path
    return None


def check_dataset_files(dataset: str, data_dir: str | None) -> list[str]:
    """Problems that would stop :func:`load_splits` from finding the dataset's files.

    Only looks at names and existence, never at file contents. ``digits`` needs no files.

    Returns:
        One message per problem (e.g. ``"missing files in /x: train-images-idx3-ubyte[.gz]"``);
        an empty list when everything is there.
    """
    if dataset not in _INFO:
        return [f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}"]
    if dataset == "digits":
        return []
    if not data_dir:
        packaged = DEFAULT_DATA_DIRS.get(dataset)
        if packaged:
            return [f"data_dir is not set and {packaged[0]} does not exist: install the "
                    f"Debian package {packaged[1]} (apt-get install {packaged[1]}) or set "
                    f"task.data_dir to a folder with the four IDX files"]
        return [f"data_dir is required for dataset {dataset!r}"]
    if not os.path.isdir(data_dir):
        return [f"data_dir {data_dir} does not exist or is not a directory "
                f"(dataset {dataset!r})"]
    if dataset in ("mnist", "fashion_mnist"):
        missing = [n + "[.gz]" for n in _IDX_NAMES if _idx_path(data_dir, n) is None]
        where = data_dir
    else:
        where = _cifar_dir(dataset, data_dir)
        missing = [n for n in _CIFAR_FILES[dataset][1]
                   if not os.path.isfile(os.path.join(where, n))]
        if missing and where == data_dir:
            where = f"{data_dir} (or {os.path.join(data_dir, _CIFAR_FILES[dataset][0])})"
    return [f"missing files in {where}: {', '.join(missing)}"] if missing else []


# --------------------------------------------------------------------------- IDX (MNIST)


# The most data bytes one dataset file may hold (decompressed), checked against its header
# (IDX) or its size on disk (CIFAR pickles) before anything is allocated. The largest file
# of the supported datasets is CIFAR-100's ``train`` (155 MB); 1 GiB leaves room for larger
# IDX sets (EMNIST ByClass: 0.55 GB) and stops a crafted header or a gzip bomb at once (a
# file's float32 copies in training take about four times its bytes).
MAX_FILE_BYTES = 1 << 30
MAX_IDX_DIMS = 32  # numpy's own limit is 64; an IDX file has 1 to 4


def _open(path: str) -> io.BufferedIOBase:
    """The file's bytes as a stream; ``.gz`` files are decompressed as they are read."""
    try:
        return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")
    except OSError as e:
        raise _fail(path, f"cannot read file ({e.strerror or e})") from None


def _read_at_most(f: io.BufferedIOBase, path: str, n: int) -> bytes:
    """Up to ``n`` bytes (fewer only at the end of the data): never more is decompressed."""
    try:
        return f.read(n)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise _fail(path, f"corrupt or truncated gzip stream ({e})") from None
    except OSError as e:
        raise _fail(path, f"cannot read file ({e.strerror or e})") from None


def read_idx(path: str, *, expect_magic: int | None = None,
             expect_dims: tuple[int | None, ...] | None = None,
             max_bytes: int = MAX_FILE_BYTES) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array.

    The IDX format: a 4-byte big-endian magic number ``0x0000TTNN`` (TT = element type, NN =
    number of dimensions), NN big-endian uint32 sizes, then the elements, row-major. The
    header is read first; the data size it declares is computed exactly and refused above
    ``max_bytes`` before any data is read or decompressed, and exactly that many bytes (plus
    one, to detect trailing bytes) are read.

    Args:
        path: the file; ``.gz`` files are decompressed.
        expect_magic: if given, the exact magic number required (``0x803`` for an idx3-ubyte
            image file, ``0x801`` for idx1-ubyte labels).
        expect_dims: if given, the sizes the header must declare (``None``: any), checked
            before any data is read.
        max_bytes: the largest data size accepted.

    Raises:
        DatasetFileError: unreadable, bad magic number, over the size limit, truncated, or
            trailing bytes.
    """
    with _open(path) as f:
        head = _read_at_most(f, path, 4)
        if len(head) < 4:
            raise _fail(path, f"truncated: {len(head)} bytes, too short for the 4-byte magic "
                        "number")
        magic = struct.unpack(">I", head)[0]
        type_code, ndim = head[2], head[3]
        if head[0] != 0 or head[1] != 0 or type_code not in _IDX_DTYPES or ndim == 0:
            raise _fail(path, f"bad magic number 0x{magic:08x}: not an IDX file")
        if ndim > MAX_IDX_DIMS:
            raise _fail(path, f"magic number 0x{magic:08x} declares {ndim} dimensions, more "
                        f"than {MAX_IDX_DIMS}")
        if expect_magic is not None and magic != expect_magic:
            raise _fail(path, f"bad magic number 0x{magic:08x}, expected 0x{expect_magic:08x}")
        sizes = _read_at_most(f, path, 4 * ndim)
        if len(sizes) < 4 * ndim:
            raise _fail(path, f"truncated: header needs {4 + 4 * ndim} bytes, file has "
                        f"{4 + len(sizes)}")
        dims = struct.unpack(f">{ndim}I", sizes)
        dtype = np.dtype(_IDX_DTYPES[type_code])
        expected = math.prod(dims) * dtype.itemsize  # Python ints: exact, never overflows
        shape = "x".join(map(str, dims))
        # a zero dimension makes the data empty, but numpy still refuses a shape whose other
        # sizes overflow: those are bounded too
        spread = math.prod(d for d in dims if d) * dtype.itemsize
        if max(expected, spread) > max_bytes:
            raise _fail(path, f"header declares dimensions {shape} ({expected} data bytes), "
                        f"over the {max_bytes} byte limit")
        if expect_dims is not None and (len(dims) != len(expect_dims) or any(
                want is not None and d != want for d, want in zip(dims, expect_dims))):
            want = "x".join("N" if d is None else str(d) for d in expect_dims)
            raise _fail(path, f"header declares dimensions {shape}, expected {want}")
        raw = _read_at_most(f, path, expected + 1)
    if len(raw) < expected:
        raise _fail(path, f"truncated: dimensions {shape} need {expected} data bytes, file "
                    f"has {len(raw)}")
    if len(raw) > expected:
        header = 4 + 4 * ndim
        extra = ("" if path.endswith(".gz")  # the rest is never decompressed
                 else f"{os.path.getsize(path) - header - expected} ")
        raise _fail(path, f"{extra}unexpected bytes after the data (dimensions {shape})")
    data = np.frombuffer(raw, dtype=dtype).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _read_mnist_pair(data_dir: str, prefix: str, hw: int, classes: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    img_path = _idx_path(data_dir, f"{prefix}-images-idx3-ubyte")
    lbl_path = _idx_path(data_dir, f"{prefix}-labels-idx1-ubyte")
    assert img_path is not None and lbl_path is not None  # checked by check_dataset_files
    images = read_idx(img_path, expect_magic=0x00000803, expect_dims=(None, hw, hw))
    labels = read_idx(lbl_path, expect_magic=0x00000801)
    if len(labels) != len(images):
        raise _fail(lbl_path, f"{len(labels)} labels for {len(images)} images in "
                    f"{os.path.basename(img_path)}")
    if len(labels) and int(labels.max()) >= classes:
        raise _fail(lbl_path, f"label {int(labels.max())} out of range 0..{classes - 1}")
    floats = images.astype(np.float32)[:, None]
    floats /= 255.0  # in place: one float copy of the images, not two
    return floats, labels.astype(np.int64)


# --------------------------------------------------------------------------- CIFAR pickles


def _numpy_attr(modules: tuple[str, ...], name: str) -> Any:
    import importlib

    for mod in modules:
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy provides none of {[m + '.' + name for m in modules]}")


def _safe_dtype(*args: Any) -> np.dtype:
    """``numpy.dtype`` for the unpickler: plain scalar types only (an object dtype would hold
    objects; a sub-array or structured one could size an array by itself)."""
    if args and isinstance(args[0], bytes):
        args = (args[0].decode("ascii"), *args[1:])
    dt = np.dtype(*args)
    if dt.hasobject:
        raise pickle.UnpicklingError(f"refusing to load object arrays (dtype {dt})")
    if dt.subdtype is not None or dt.names is not None:
        raise pickle.UnpicklingError(f"refusing dtype {dt} (only plain scalar types)")
    return dt


def _indexable(value: Any) -> bool:
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def _no_size(kind: type) -> Any:
    """``bytes`` / ``bytearray`` for the unpickler, refusing the ``(n)`` form: a pickle may
    not ask for ``n`` zero bytes (a 10**12 in a few bytes of file; numpy integers too)."""
    def build(*args: Any) -> Any:
        if args and _indexable(args[0]):
            raise pickle.UnpicklingError(f"refusing {kind.__name__}({args[0]!r}): an "
                                         "allocation by size")
        return kind(*args)
    return build


class _ArrayClass:
    """What ``numpy.ndarray`` unpickles to: the array class as the argument numpy's own
    reconstruction takes, never a constructor (``ndarray(shape)`` would allocate by shape)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError("refusing numpy.ndarray(...): an allocation by shape")


_ARRAY_CLASS = _ArrayClass()


def _safe_reconstruct(real: Any) -> Any:
    """numpy's ``_reconstruct`` for the unpickler: only the empty array a pickled array
    starts from (its data then comes with ``__setstate__``, whose size numpy checks against
    the shape, so no array is larger than the bytes in the file)."""
    def build(subtype: Any, shape: Any, dtype: Any) -> Any:
        if subtype is not _ARRAY_CLASS:
            raise pickle.UnpicklingError("refusing _reconstruct of anything but ndarray")
        if not isinstance(shape, tuple) or math.prod(int(d) for d in shape) != 0:
            raise pickle.UnpicklingError(f"refusing _reconstruct of shape {shape!r}: an "
                                         "allocation by shape")
        return real(np.ndarray, shape, dtype)
    return build


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for ``bytes``: latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can build only what CIFAR batches contain.

    Allowed: builtin containers and scalars, numpy array/dtype/scalar reconstruction (under
    both the numpy 1 ``numpy.core`` and numpy 2 ``numpy._core`` names, and Python 2's
    ``__builtin__``), latin-1 ``_codecs.encode`` (protocol-2 ``bytes``). Any other global
    raises :class:`DatasetFileError` ``"refusing to load object <module>.<name>"`` before it
    is imported, so nothing in the file is executed.
    """

    _BUILTINS = frozenset(
        {"dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray", "str", "int",
         "float", "complex", "bool"})
    _NUMPY = {
        "_reconstruct": ("multiarray", "_reconstruct"),
        "scalar": ("multiarray", "scalar"),
        "_frombuffer": ("numeric", "_frombuffer"),
    }

    def __init__(self, file: io.BufferedIOBase, *, path: str) -> None:
        # encoding="bytes": Python 2 ``str`` (the real batches' keys) stays ``bytes``.
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        import builtins

        if module in ("builtins", "__builtin__") and name in ("bytes", "bytearray"):
            return _no_size(getattr(builtins, name))
        if module in ("builtins", "__builtin__") and name in self._BUILTINS:
            return getattr(builtins, name)
        if module == "numpy" and name == "ndarray":
            return _ARRAY_CLASS
        if module == "numpy" and name == "dtype":
            return _safe_dtype
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        if name in self._NUMPY:
            sub, attr = self._NUMPY[name]
            allowed = (f"numpy.core.{sub}", f"numpy._core.{sub}")
            if module in allowed:
                real = _numpy_attr(allowed[::-1], attr)
                return _safe_reconstruct(real) if name == "_reconstruct" else real
        raise _fail(self._path, f"refusing to load object {module}.{name}")


def read_cifar_batch(path: str, *, label_key: str, num_classes: int,
                     max_bytes: int = MAX_FILE_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python batch: ``(images uint8 N x 3 x 32 x 32, labels int64 N)``.

    The batch is a pickled dict with ``b'data'`` (uint8, N x 3072: 1024 red, 1024 green, 1024
    blue values, row-major) and ``label_key`` (``b'labels'`` for CIFAR-10, ``b'fine_labels'``
    for CIFAR-100), a list of N ints.

    A file over ``max_bytes`` is refused before it is read. An unpickled batch is no larger
    than its file: the unpickler builds nothing by a size or shape the file states (no
    ``bytes(n)``, no ``ndarray(shape)``, no sub-array dtypes), only from bytes it holds.

    Raises:
        DatasetFileError: over the size limit, refused object, corrupt or truncated pickle,
            missing key, bad shape.
    """
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise _fail(path, f"cannot read file ({e.strerror or e})") from None
    if size > max_bytes:
        raise _fail(path, f"{size} bytes, over the {max_bytes} byte limit")
    try:
        with open(path, "rb") as f:
            obj = RestrictedUnpickler(f, path=path).load()
    except DatasetFileError:
        raise
    except OSError as e:
        raise _fail(path, f"cannot read file ({e.strerror or e})") from None
    except Exception as e:  # untrusted bytes: any failure to decode them is a corrupt file
        raise _fail(path, f"corrupt or truncated pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise _fail(path, f"expected a pickled dict, got {type(obj).__name__}")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    for key in ("data", label_key):
        if key not in d:
            raise _fail(path, f"missing key b'{key}' (keys: {sorted(map(str, d))})")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        desc = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise _fail(path, f"b'data' must be a uint8 array of shape (N, 3072), got {desc}")
    try:
        labels = np.asarray(d[label_key], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise _fail(path, f"b'{label_key}' is not a list of integers") from None
    if labels.ndim != 1 or len(labels) != len(data):
        raise _fail(path, f"b'{label_key}' has shape {labels.shape}, expected ({len(data)},)")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise _fail(path, f"b'{label_key}' values must be in 0..{num_classes - 1}, "
                    f"got {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels


def _read_cifar(dataset: str, data_dir: str) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    where = _cifar_dir(dataset, data_dir)
    names = _CIFAR_FILES[dataset][1]
    label_key, classes = ("labels", 10) if dataset == "cifar10" else ("fine_labels", 100)
    parts = [read_cifar_batch(os.path.join(where, n), label_key=label_key, num_classes=classes)
             for n in names]
    train_x = np.concatenate([p[0] for p in parts[:-1]]).astype(np.float32) / 255.0
    train_y = np.concatenate([p[1] for p in parts[:-1]])
    test_x, test_y = parts[-1]
    return (train_x, train_y), (test_x.astype(np.float32) / 255.0, test_y)


def _read_raw(task: TaskSpec) -> tuple[tuple[np.ndarray, np.ndarray], ...] | None:
    """The dataset's official (train, test) arrays, read and checked; ``None`` for digits."""
    problems = check_dataset_files(task.dataset, task.data_dir)
    if problems:
        raise DatasetError("; ".join(problems))
    if task.dataset == "digits":
        return None
    assert task.data_dir is not None  # checked above
    info = _INFO[task.dataset]
    if task.dataset in ("mnist", "fashion_mnist"):
        return (_read_mnist_pair(task.data_dir, "train", info[1], info[2]),
                _read_mnist_pair(task.data_dir, "t10k", info[1], info[2]))
    return _read_cifar(task.dataset, task.data_dir)


def check_dataset_readable(task: TaskSpec) -> None:
    """Read every file of ``task``'s dataset once, with all the checks :func:`load_splits`
    makes (no torch): the driver calls this before a study is created or a trial starts, so
    an unreadable dataset stops a run at once instead of failing trial after trial.

    Raises:
        DatasetError: missing files, or no training images; DatasetFileError: a file is
            wrong (also a DatasetError).
    """
    raw = _read_raw(task)
    if raw is not None and len(raw[0][1]) - round(task.val_fraction * len(raw[0][1])) < 1:
        raise DatasetError(f"dataset {task.dataset!r} in {task.data_dir}: the training split "
                           f"would be empty ({len(raw[0][1])} training images)")


# --------------------------------------------------------------------------- splits


def stratified_split(labels: np.ndarray, count: int, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into ``(rest, taken)`` with ``len(taken) == count``, stratified by label.

    Each class gives ``floor`` or ``ceil`` of its proportional share (largest remainders get
    the extra samples, ties broken at random); within a class the samples are drawn at random.
    Both index arrays are sorted.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if not 0 <= count <= n:
        raise ValueError(f"count must be in 0..{n}, got {count}")
    classes, inverse = np.unique(labels, return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(classes))
    ideal = sizes * (count / n) if n else sizes * 0.0
    share = np.floor(ideal).astype(np.int64)
    extra = count - int(share.sum())
    if extra:
        # largest fractional part first; a random key breaks ties reproducibly
        order = np.lexsort((rng.random(len(classes)), -(ideal - share)))
        share[order[:extra]] += 1
    taken = []
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        taken.append(rng.permutation(members)[: share[c]])
    taken_idx = np.sort(np.concatenate(taken)) if taken else np.zeros(0, np.int64)
    mask = np.ones(n, dtype=bool)
    mask[taken_idx] = False
    return np.flatnonzero(mask), taken_idx


@dataclass(frozen=True)
class Splits:
    """Train / validation / test tensors of one dataset, ready to use.

    ``*_x`` are float32 NCHW tensors normalized per channel with the *training* split's mean
    and standard deviation; ``*_y`` are int64 class indices (what ``cross_entropy`` takes).
    ``info`` is ``(in_channels, input_hw, num_classes)``; ``augment`` says whether training
    should use random-crop + flip augmentation (CIFAR only).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    info: tuple[int, int, int]
    augment: bool


def _check_fractions(task: TaskSpec) -> None:
    v, t = task.val_fraction, task.test_fraction
    if not (0 < v < 1 and 0 < t < 1 and v + t < 1):
        raise SpecError("val_fraction and test_fraction must each be in (0, 1) with a sum "
                        f"below 1, got val_fraction={v}, test_fraction={t}")


def load_splits(task: TaskSpec) -> Splits:
    """Load ``task.dataset`` and split it, stratified and seeded with ``task.split_seed``.

    ``digits`` (no official test set): test = ``test_fraction`` of the whole set, validation =
    ``val_fraction`` of the whole set (drawn from what is left), train = the rest. Datasets
    with an official test split (MNIST, Fashion-MNIST, CIFAR) keep it as the test set
    (``test_fraction`` is ignored) and carve ``val_fraction`` of the official training set out
    as validation.

    Raises:
        DatasetError: unknown dataset or missing files (all problems in one message).
        DatasetFileError: a file is corrupt, truncated or refused (also a ``DatasetError``).
        SpecError: fractions out of range.
    """
    import torch

    _check_fractions(task)
    raw = _read_raw(task)
    info = _INFO[task.dataset]
    rng = np.random.default_rng(task.split_seed)
    if raw is None:  # digits
        from sklearn.datasets import load_digits

        x_all, y_all = load_digits(return_X_y=True)
        x_all = (x_all.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
        y_all = y_all.astype(np.int64)
        n = len(y_all)
        rest, test = stratified_split(y_all, round(task.test_fraction * n), rng)
        keep, val = stratified_split(y_all[rest], round(task.val_fraction * n), rng)
        train, val = rest[keep], rest[val]
        tr = (x_all[train], y_all[train])
        va = (x_all[val], y_all[val])
        te = (x_all[test], y_all[test])
    else:
        full, te = raw
        keep, val = stratified_split(full[1], round(task.val_fraction * len(full[1])), rng)
        tr = (full[0][keep], full[1][keep])
        va = (full[0][val], full[1][val])
    if len(tr[1]) == 0:
        raise DatasetError(f"dataset {task.dataset!r}: the training split is empty")
    mean = tr[0].mean(axis=(0, 2, 3), keepdims=True, dtype=np.float64)
    std = tr[0].std(axis=(0, 2, 3), keepdims=True, dtype=np.float64)
    std = np.where(std > 1e-8, std, 1.0)
    mean, std = mean.astype(np.float32), std.astype(np.float32)  # no float64 copy of the data

    def norm(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray((x - mean) / std, dtype=np.float32))

    def lab(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))

    return Splits(
        train_x=norm(tr[0]), train_y=lab(tr[1]),
        val_x=norm(va[0]), val_y=lab(va[1]),
        test_x=norm(te[0]), test_y=lab(te[1]),
        info=info, augment=task.dataset in ("cifar10", "cifar100"),
    )
