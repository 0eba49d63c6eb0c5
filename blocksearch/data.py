"""Dataset loading for blocksearch: CIFAR-10, ImageFolder trees and a synthetic set.

:func:`load_dataset` turns a *source* string into a :class:`Dataset` of flat,
normalized float32 feature vectors. The accepted sources are ``"cifar10"``
(torchvision's copy, downloaded into the cache folder), the path of a folder
that contains torchvision's ``cifar-10-batches-py`` folder, the path of an
ImageFolder tree with ``train/`` and ``test/`` splits, and ``"synthetic"`` or
``"synthetic:N"``.

Decoded images of the file-based sources are cached as uint8 tensors in one
file per source under the cache folder, so only the first load decodes them.
Pixels become float32 only after the cache is read: pixel ``p`` in 0..255
maps to ``(p / 255 - 0.5) / 0.5``, which lies in [-1, 1].
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import tarfile
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.utils.data
import torchvision.datasets
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from blocksearch.errors import DataError

# NOTE: torchvision 0.29 deprecates its image decoders in favour of TorchCodec
# and warns on every call. On 32x32 JPEGs they still run about twice as fast as
# Pillow, so this module uses them and silences that warning. When a later
# torchvision removes them, Pillow decodes every image.
try:
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_image as _torchvision_decode
except ImportError:
    _torchvision_decode = None

__all__ = [
    "CACHE_ENV_VAR",
    "DATA_ENV_VAR",
    "DEFAULT_SOURCE",
    "Dataset",
    "load_dataset",
    "resolve_cache_dir",
    "resolve_source",
]

logger = logging.getLogger("blocksearch.data")

#: Environment variable that names the dataset source when none is passed.
DATA_ENV_VAR = "BLOCKSEARCH_DATA"
#: Environment variable that overrides the cache folder.
CACHE_ENV_VAR = "BLOCKSEARCH_CACHE"
#: Source used when neither an argument nor $BLOCKSEARCH_DATA names one.
DEFAULT_SOURCE = "cifar10"

_CIFAR_FOLDER = "cifar-10-batches-py"

# Bump when the layout of cache files changes, so that old files are rebuilt.
_CACHE_FORMAT = 1

# The synthetic dataset: 10 classes of 3x8x8 images, small enough for CPU tests.
_SYNTHETIC_SEED = 1_234_567
_SYNTHETIC_CLASSES = 10
_SYNTHETIC_SHAPE = (3, 8, 8)
_SYNTHETIC_DEFAULT_TRAIN_SIZE = 512
# The test split gets N // 2 samples and labels cycle through the classes, so
# N >= 20 puts every class into both splits.
_SYNTHETIC_MIN_TRAIN_SIZE = 2 * _SYNTHETIC_CLASSES
# Class means are uniform in [-0.6, 0.6], and the Gaussian noise has this std.
_SYNTHETIC_MEAN_RANGE = 0.6
_SYNTHETIC_NOISE_STD = 0.5

# Decoding runs in chunks of images. A chunk contains at most this many images
# and this many bytes of pixels, so that the chunks in flight between decoder
# processes (8 workers x 2 prefetched chunks x 3 MiB = 48 MiB) fit in a small
# /dev/shm such as Docker's default of 64 MiB.
_MAX_CHUNK_IMAGES = 1024
_MAX_CHUNK_BYTES = 3 * 1024 * 1024
# NOTE: both limits below are estimates. On a 2-core VM, 2 decoder processes
# cut the decoding of 60,000 32x32 JPEGs from about 3.4 s to 2.2 s, and for a
# few thousand images forking them costs more than it saves. More than 2
# processes were never measured.
_MIN_IMAGES_FOR_WORKERS = 5000
_MAX_WORKERS = 8

# Temporary cache files older than this are left over from killed runs.
_STALE_TEMP_SECONDS = 3600

_ACCEPTED_SOURCES = (
    "Accepted sources: 'cifar10' (torchvision's CIFAR-10, downloaded into the "
    "cache folder), 'synthetic' or 'synthetic:N' (a small generated dataset "
    "with N training samples), or the path of a folder that either contains "
    f"torchvision's {_CIFAR_FOLDER} folder or has the ImageFolder layout "
    "train/<class>/<image> and test/<class>/<image>."
)

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True, eq=False)
class Dataset:
    """Image classification dataset held in memory as flat feature vectors.

    Images are rows of ``in_features`` values, flattened in (channel, height,
    width) order and normalized to [-1, 1] by the loaders in this module.
    Labels are int64 indices into ``classes``. The constructor raises
    ValueError when shapes, dtypes or label values disagree.
    """

    #: Short label of the source, such as "cifar10" or "imagefolder:<path>".
    name: str
    #: (N_train, in_features) floating-point images.
    train_images: torch.Tensor
    #: (N_train,) int64 class indices.
    train_labels: torch.Tensor
    #: (N_test, in_features) floating-point images.
    test_images: torch.Tensor
    #: (N_test,) int64 class indices.
    test_labels: torch.Tensor
    #: Class names; label i names ``classes[i]``.
    classes: tuple[str, ...]
    #: (N_validation, in_features) images held out of training, or None.
    validation_images: torch.Tensor | None = None
    #: (N_validation,) int64 class indices, or None.
    validation_labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        _check_split("train", self.train_images, self.train_labels, len(self.classes))
        _check_split("test", self.test_images, self.test_labels, len(self.classes))
        if (self.validation_images is None) != (self.validation_labels is None):
            raise ValueError(
                "validation images and labels must be given together or not at all."
            )
        if self.validation_images is not None:
            _check_split(
                "validation",
                self.validation_images,
                self.validation_labels,
                len(self.classes),
            )
        if self.train_images.shape[1] != self.test_images.shape[1]:
            raise ValueError(
                f"train images have {self.train_images.shape[1]} features but test "
                f"images have {self.test_images.shape[1]}; both must have the same."
            )

    @property
    def in_features(self) -> int:
        """Number of features in one flattened image."""
        return int(self.train_images.shape[1])

    @property
    def num_classes(self) -> int:
        """Number of classes, which is also one more than the largest label."""
        return len(self.classes)

    def to(self, device: torch.device | str) -> Dataset:
        """Return a Dataset with all its tensors on ``device``.

        Tensors already on ``device`` are shared with this Dataset, not copied.
        """
        moved = {
            name: getattr(self, name).to(device)
            for name in (
                "train_images",
                "train_labels",
                "test_images",
                "test_labels",
                "validation_images",
                "validation_labels",
            )
            if getattr(self, name) is not None
        }
        return dataclasses.replace(self, **moved)

    def check_validation_size(self, size: int) -> None:
        """Raise DataError unless ``size`` leaves train images on both sides."""
        count = len(self.train_labels)
        if not 1 <= size < count:
            raise DataError(
                f"validation size {size} does not fit the {count} train images of "
                f"{self.name}; choose a size from 1 to {count - 1}, or use "
                "--protocol paper to train on the whole train split"
            )

    def split_validation(self, size: int, seed: int) -> Dataset:
        """Return a copy whose last ``size`` shuffled train images form a
        validation split, held out of training.

        The shuffle uses its own generator seeded with ``seed``, so a split is
        the same in every process and every run with that seed.

        Raises:
            DataError: If ``size`` is not between 1 and the train count minus 1.
        """
        count = len(self.train_labels)
        self.check_validation_size(size)
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(count, generator=generator).to(self.train_labels.device)
        keep, held_out = order[: count - size], order[count - size :]
        return dataclasses.replace(
            self,
            train_images=self.train_images[keep],
            train_labels=self.train_labels[keep],
            validation_images=self.train_images[held_out],
            validation_labels=self.train_labels[held_out],
        )


def _check_split(
    split: str, images: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> None:
    if images.ndim != 2 or not images.is_floating_point():
        raise ValueError(
            f"{split} images must be a 2-D floating-point tensor, got "
            f"{images.ndim}-D {images.dtype}."
        )
    if labels.ndim != 1 or labels.dtype != torch.int64:
        raise ValueError(
            f"{split} labels must be a 1-D int64 tensor, got "
            f"{labels.ndim}-D {labels.dtype}."
        )
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{split} split has {images.shape[0]} images but "
            f"{labels.shape[0]} labels; the counts must match."
        )
    if labels.numel() > 0:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"{split} labels span {low}..{high}, but with {num_classes} "
                f"classes they must lie in 0..{num_classes - 1}."
            )


@dataclass(frozen=True, eq=False)
class _UInt8Images:
    """Decoded dataset before normalization; this is what a cache file stores."""

    train_images: torch.Tensor  # (N_train, C, H, W) uint8
    train_labels: torch.Tensor  # (N_train,) int64
    test_images: torch.Tensor  # (N_test, C, H, W) uint8
    test_labels: torch.Tensor  # (N_test,) int64
    classes: tuple[str, ...]


def resolve_source(source: str | None) -> str:
    """Return the dataset source to use.

    Args:
        source: Source named by the caller, for example by ``--data``.

    Returns:
        ``source`` unless it is None, else $BLOCKSEARCH_DATA when that is set
        to a non-blank value, else ``"cifar10"``.
    """
    if source is not None:
        return source
    from_env = os.environ.get(DATA_ENV_VAR, "")
    if from_env.strip():
        return from_env
    return DEFAULT_SOURCE


def resolve_cache_dir(cache_dir: Path | str | None = None) -> Path:
    """Return the cache folder: ``cache_dir``, else $BLOCKSEARCH_CACHE, else
    ``~/.cache/blocksearch``. It expands a leading ``~`` and creates nothing.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from_env = os.environ.get(CACHE_ENV_VAR, "")
    if from_env.strip():
        return Path(from_env).expanduser()
    return Path.home() / ".cache" / "blocksearch"


def load_dataset(
    source: str | None = None,
    *,
    cache_dir: Path | None = None,
    download: bool = True,
    on_progress: ProgressCallback | None = None,
) -> Dataset:
    """Load a dataset as normalized float32 feature vectors on the CPU.

    Args:
        source: ``"cifar10"``, ``"synthetic"``, ``"synthetic:N"``, or the path
            of a folder that contains ``cifar-10-batches-py`` (the path of
            that folder itself also works) or has ImageFolder ``train/`` and
            ``test/`` splits. None means :func:`resolve_source` picks it. The
            words ``cifar10`` and ``synthetic`` never name a folder; write
            ``./cifar10`` for a folder of that name.
        cache_dir: Folder for decoded-image caches and for torchvision's
            download; None means :func:`resolve_cache_dir` picks it. When it
            cannot be written, loading logs a warning and skips the cache.
        download: Whether ``"cifar10"`` may download the dataset when the
            cache folder does not hold it yet. Other sources ignore it.
        on_progress: Called as ``on_progress(done, total)`` with image counts
            after each chunk of up to 1,024 images while ImageFolder images
            are decoded, last with ``done == total``. It is not called for
            other sources or when the images come from a cache file.

    Returns:
        A :class:`Dataset` whose images are (N, C*H*W) float32 in [-1, 1],
        flattened in (channel, height, width) order.

    Raises:
        DataError: The source names no supported dataset, a download failed,
            or the files are unreadable or laid out wrongly.
    """
    resolved = resolve_source(source)
    # Name the environment variable in errors when the value came from there.
    origin = ""
    if source is None and resolved != DEFAULT_SOURCE:
        origin = f" (from ${DATA_ENV_VAR})"
    if not resolved.strip():
        raise DataError(
            f"The dataset source is blank: {resolved!r}. {_ACCEPTED_SOURCES}"
        )
    if resolved == DEFAULT_SOURCE:
        return _load_downloaded_cifar10(resolve_cache_dir(cache_dir), download)
    if resolved == "synthetic" or resolved.startswith("synthetic:"):
        return _make_synthetic(_parse_synthetic_size(resolved))

    path = Path(resolved).expanduser()
    if not path.exists():
        raise DataError(
            f"The dataset path {resolved!r}{origin} does not exist. {_ACCEPTED_SOURCES}"
        )
    if not path.is_dir():
        raise DataError(
            f"The dataset path {resolved!r}{origin} is a file, not a folder. "
            f"{_ACCEPTED_SOURCES}"
        )
    path = path.resolve()
    cifar_folder = _find_cifar_folder(path)
    if cifar_folder is not None:
        return _load_cifar10_folder(cifar_folder, resolve_cache_dir(cache_dir))
    if (path / "train").is_dir() or (path / "test").is_dir():
        return _load_image_folder(path, resolve_cache_dir(cache_dir), on_progress)
    raise DataError(
        f"The dataset folder {str(path)!r}{origin} is not a supported layout: it "
        f"has no train/ or test/ subfolder and no {_CIFAR_FOLDER} folder. "
        f"{_ACCEPTED_SOURCES}"
    )


def _normalize(images: torch.Tensor) -> torch.Tensor:
    """Flatten uint8 (N, C, H, W) images to float32 (N, C*H*W) in [-1, 1]."""
    features = math.prod(images.shape[1:])
    flat = images.reshape(images.shape[0], features).to(torch.float32)
    # (p / 255 - 0.5) / 0.5 == p / 127.5 - 1, and dividing keeps 255 -> 1.0 exact.
    return flat.div_(127.5).sub_(1.0)


def _to_dataset(name: str, decoded: _UInt8Images) -> Dataset:
    return Dataset(
        name=name,
        train_images=_normalize(decoded.train_images),
        train_labels=decoded.train_labels,
        test_images=_normalize(decoded.test_images),
        test_labels=decoded.test_labels,
        classes=decoded.classes,
    )


# --- Synthetic dataset -------------------------------------------------------


def _parse_synthetic_size(source: str) -> int:
    if source == "synthetic":
        return _SYNTHETIC_DEFAULT_TRAIN_SIZE
    text = source.removeprefix("synthetic:")
    if not (text.isascii() and text.isdigit()) or int(text) < _SYNTHETIC_MIN_TRAIN_SIZE:
        raise DataError(
            f"Invalid synthetic dataset source {source!r}: write 'synthetic:N' "
            f"with N a whole number of training samples, at least "
            f"{_SYNTHETIC_MIN_TRAIN_SIZE} so that both splits contain all "
            f"{_SYNTHETIC_CLASSES} classes (the test split gets N // 2). "
            f"For example 'synthetic:{_SYNTHETIC_DEFAULT_TRAIN_SIZE}'."
        )
    return int(text)


def _make_synthetic(train_size: int) -> Dataset:
    """Generate the synthetic dataset: Gaussian noise around one fixed mean
    image per class, clamped to [-1, 1]. Equal sizes give equal tensors."""
    generator = torch.Generator().manual_seed(_SYNTHETIC_SEED)
    features = math.prod(_SYNTHETIC_SHAPE)
    # Drawn first, so that every size shares the same class means.
    means = torch.rand((_SYNTHETIC_CLASSES, features), generator=generator)
    means = (means * 2.0 - 1.0) * _SYNTHETIC_MEAN_RANGE
    train_images, train_labels = _synthetic_split(means, train_size, generator)
    test_images, test_labels = _synthetic_split(means, train_size // 2, generator)
    name = "synthetic"
    if train_size != _SYNTHETIC_DEFAULT_TRAIN_SIZE:
        name = f"synthetic:{train_size}"
    return Dataset(
        name=name,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        classes=tuple(f"class{index}" for index in range(_SYNTHETIC_CLASSES)),
    )


def _synthetic_split(
    means: torch.Tensor, size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    num_classes, features = means.shape
    balanced = torch.arange(size, dtype=torch.int64) % num_classes
    labels = balanced[torch.randperm(size, generator=generator)]
    noise = torch.randn((size, features), generator=generator) * _SYNTHETIC_NOISE_STD
    images = (means[labels] + noise).clamp_(-1.0, 1.0)
    return images, labels


# --- CIFAR-10 through torchvision --------------------------------------------


def _find_cifar_folder(path: Path) -> Path | None:
    """Return the cifar-10-batches-py folder that ``path`` is or contains."""
    if path.name == _CIFAR_FOLDER:
        return path
    if (path / _CIFAR_FOLDER).is_dir():
        return path / _CIFAR_FOLDER
    return None


def _load_downloaded_cifar10(cache_dir: Path, download: bool) -> Dataset:
    """Load the "cifar10" source from <cache_dir>/torchvision."""
    root = cache_dir / "torchvision"
    cifar_folder = root / _CIFAR_FOLDER
    if cifar_folder.is_dir():
        fingerprint = _stat_fingerprint(_files_in(cifar_folder))
        cached = _read_cache(cache_dir, "cifar10", cifar_folder, fingerprint)
        if cached is not None:
            return _to_dataset(DEFAULT_SOURCE, cached)

    try:
        decoded = _read_torchvision_cifar10(root, download)
    except (OSError, RuntimeError, EOFError, tarfile.TarError) as error:
        local_copy = (
            f"pass --data PATH or set ${DATA_ENV_VAR}=PATH, where PATH is a folder "
            "in ImageFolder layout (train/<class>/*.jpg and test/<class>/*.jpg) or "
            f"a folder that already contains torchvision's {_CIFAR_FOLDER} folder."
        )
        if download:
            raise DataError(
                f"Downloading CIFAR-10 into {str(root)!r} failed: {error}. Without "
                f"internet access, {local_copy}"
            ) from error
        raise DataError(
            f"CIFAR-10 is not in {str(root)!r} and downloading is disabled "
            f"(torchvision reported: {error}). Allow the download, or {local_copy}"
        ) from error

    fingerprint = _stat_fingerprint(_files_in(cifar_folder))
    _write_cache(cache_dir, "cifar10", cifar_folder, fingerprint, decoded)
    return _to_dataset(DEFAULT_SOURCE, decoded)


def _load_cifar10_folder(cifar_folder: Path, cache_dir: Path) -> Dataset:
    """Load CIFAR-10 from a user's existing cifar-10-batches-py folder."""
    name = f"cifar10:{cifar_folder.parent}"
    fingerprint = _stat_fingerprint(_files_in(cifar_folder))
    cached = _read_cache(cache_dir, "cifar10", cifar_folder, fingerprint)
    if cached is not None:
        return _to_dataset(name, cached)
    try:
        decoded = _read_torchvision_cifar10(cifar_folder.parent, download=False)
    except (OSError, RuntimeError, EOFError) as error:
        raise DataError(
            f"The CIFAR-10 folder {str(cifar_folder)!r} is incomplete or corrupted "
            f"(torchvision reported: {error}). Replace it with the {_CIFAR_FOLDER} "
            "folder extracted from the original cifar-10-python.tar.gz, or point "
            "--data at an ImageFolder tree instead."
        ) from error
    _write_cache(cache_dir, "cifar10", cifar_folder, fingerprint, decoded)
    return _to_dataset(name, decoded)


def _read_torchvision_cifar10(root: Path, download: bool) -> _UInt8Images:
    """Read both splits with torchvision, which checks each file's MD5 sum.

    Raises whatever torchvision raises: RuntimeError for missing or corrupted
    files, OSError (URLError included) for a failed download.
    """
    train = torchvision.datasets.CIFAR10(str(root), train=True, download=download)
    test = torchvision.datasets.CIFAR10(str(root), train=False, download=False)
    return _UInt8Images(
        train_images=_hwc_to_chw(train.data),
        train_labels=torch.as_tensor(train.targets, dtype=torch.int64),
        test_images=_hwc_to_chw(test.data),
        test_labels=torch.as_tensor(test.targets, dtype=torch.int64),
        classes=tuple(train.classes),
    )


def _hwc_to_chw(images: np.ndarray) -> torch.Tensor:
    """Convert torchvision's (N, H, W, C) uint8 CIFAR array to (N, C, H, W).

    torchvision's array is a transposed view of (N, C, H, W) data, so the
    permutation below usually restores contiguous memory without a copy.
    """
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


# --- ImageFolder trees -------------------------------------------------------


@dataclass(frozen=True)
class _ImageFolderScan:
    classes: tuple[str, ...]
    train_samples: list[tuple[str, int]]  # (absolute path, label)
    test_samples: list[tuple[str, int]]


def _load_image_folder(
    root: Path, cache_dir: Path, on_progress: ProgressCallback | None
) -> Dataset:
    name = f"imagefolder:{root}"
    scan = _scan_image_folder(root)
    paths = [path for path, _ in scan.train_samples + scan.test_samples]
    fingerprint = _stat_fingerprint(paths, extra=scan.classes)
    cached = _read_cache(cache_dir, "imagefolder", root, fingerprint)
    if cached is not None:
        return _to_dataset(name, cached)

    started = time.perf_counter()
    images = _decode_images(root, paths, on_progress)
    num_train = len(scan.train_samples)
    decoded = _UInt8Images(
        train_images=images[:num_train],
        train_labels=_labels_of(scan.train_samples),
        test_images=images[num_train:],
        test_labels=_labels_of(scan.test_samples),
        classes=scan.classes,
    )
    logger.info(
        "Decoded %d images from %s in %.1f s",
        len(paths),
        root,
        time.perf_counter() - started,
    )
    _write_cache(cache_dir, "imagefolder", root, fingerprint, decoded)
    return _to_dataset(name, decoded)


def _labels_of(samples: list[tuple[str, int]]) -> torch.Tensor:
    return torch.tensor([label for _, label in samples], dtype=torch.int64)


def _scan_image_folder(root: Path) -> _ImageFolderScan:
    """List the images of both splits and check that the splits agree.

    Class folders and images are found with torchvision's own ImageFolder
    helpers, so labels and sample order match torchvision.datasets.ImageFolder.
    """
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DataError(
                f"The ImageFolder dataset {str(root)!r} is missing its {split}/ "
                "folder. It needs train/<class>/<image> and test/<class>/<image>, "
                "with the same class folders in both splits."
            )
    train_classes = _class_folders(root, "train")
    test_classes = _class_folders(root, "test")
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise DataError(
            f"In the ImageFolder dataset {str(root)!r} the class folders differ "
            f"between train/ and test/: only in train/: {only_train!r}, only in "
            f"test/: {only_test!r}. Both splits need the same class folders."
        )
    class_to_index = {name: index for index, name in enumerate(train_classes)}
    train_samples = _samples_of(root, "train", class_to_index)
    test_samples = _samples_of(root, "test", class_to_index)
    return _ImageFolderScan(tuple(train_classes), train_samples, test_samples)


def _class_folders(root: Path, split: str) -> list[str]:
    try:
        classes, _ = find_classes(root / split)
    except FileNotFoundError:
        raise DataError(
            f"The {split}/ folder of the ImageFolder dataset {str(root)!r} contains "
            "no class folders. Put each class's images in "
            f"{split}/<class name>/."
        ) from None
    except OSError as error:
        raise DataError(
            f"The {split}/ folder of the ImageFolder dataset {str(root)!r} cannot "
            f"be read: {error}. Check its permissions."
        ) from error
    return classes


def _samples_of(
    root: Path, split: str, class_to_index: dict[str, int]
) -> list[tuple[str, int]]:
    # allow_empty=True so that empty classes get the message below rather than
    # torchvision's FileNotFoundError.
    samples = make_dataset(
        str(root / split), class_to_index, extensions=IMG_EXTENSIONS, allow_empty=True
    )
    found = {label for _, label in samples}
    empty = [name for name, index in class_to_index.items() if index not in found]
    if empty:
        raise DataError(
            f"In the ImageFolder dataset {str(root)!r} these {split}/ class folders "
            f"contain no images: {empty!r}. Add images with one of the extensions "
            f"{', '.join(IMG_EXTENSIONS)}, or remove the folders from both splits."
        )
    return samples


class _ImageError(Exception):
    """An image that cannot be decoded; the message names the problem."""


def _decode_file(path: str) -> torch.Tensor:
    """Decode one image file to a (3, H, W) uint8 RGB tensor.

    torchvision decodes JPEG, PNG, WebP and GIF. Pillow decodes the other
    formats that ImageFolder accepts (BMP, PPM, PGM, TIFF). Raises _ImageError.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise _ImageError(f"cannot be read: {error}") from error
    image: torch.Tensor | None = None
    if data and _torchvision_decode is not None:
        try:
            encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            image = _torchvision_decode(encoded, mode=ImageReadMode.RGB)
        except RuntimeError:
            image = None
    # torchvision decodes an animated GIF to a 4-D tensor, so Pillow reads its
    # first frame instead.
    if image is None or image.ndim != 3:
        image = _decode_with_pillow(path)
    if image.dtype == torch.uint16:
        # 16-bit PNGs: keep the high byte, which maps 0..65535 onto 0..255.
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    return image


@contextmanager
def _torchvision_deprecation_silenced() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="The image decoding and encoding capabilities of TorchVision",
            category=DeprecationWarning,
        )
        yield


def _decode_with_pillow(path: str) -> torch.Tensor:
    try:
        with Image.open(path) as opened:
            pixels = np.array(opened.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise _ImageError(f"is not a readable image: {error}") from error
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def _unreadable(relative: str, error: _ImageError) -> str:
    return f"image {relative!r} {error}. Replace or remove that file."


class _DecodeChunks(torch.utils.data.Dataset):
    """Chunks of decoded images, one chunk per item, for a DataLoader.

    Item k is ``(images, problem)``: uint8 images (n, 3, H, W) of paths
    ``k * chunk_size`` onwards and None, or an empty tensor and a message about
    the first image that failed. Returning the message instead of raising
    keeps DataLoader from wrapping it in a worker traceback.
    """

    def __init__(
        self, root: Path, paths: list[str], size: tuple[int, int], chunk_size: int
    ) -> None:
        self.root = root
        self.paths = paths
        self.size = size
        self.chunk_size = chunk_size

    def __len__(self) -> int:
        return math.ceil(len(self.paths) / self.chunk_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str | None]:
        start = index * self.chunk_size
        paths = self.paths[start : start + self.chunk_size]
        with _torchvision_deprecation_silenced():
            return self._decode_chunk(paths)

    def _decode_chunk(self, paths: list[str]) -> tuple[torch.Tensor, str | None]:
        height, width = self.size
        images = torch.empty((len(paths), 3, height, width), dtype=torch.uint8)
        for offset, path in enumerate(paths):
            try:
                image = _decode_file(path)
            except _ImageError as error:
                relative = os.path.relpath(path, self.root)
                return torch.empty(0, dtype=torch.uint8), _unreadable(relative, error)
            if tuple(image.shape[1:]) != self.size:
                relative = os.path.relpath(path, self.root)
                first = os.path.relpath(self.paths[0], self.root)
                return torch.empty(0, dtype=torch.uint8), (
                    f"image {relative!r} is {image.shape[2]}x{image.shape[1]} "
                    f"(width x height), expected {width}x{height} like {first!r}. "
                    "All images must have the same size, so resize them to one size."
                )
            images[offset] = image
        return images, None


def _decode_images(
    root: Path, paths: list[str], on_progress: ProgressCallback | None
) -> torch.Tensor:
    """Decode ``paths`` to one uint8 (N, 3, H, W) tensor, in parallel processes
    when there are many images. Raises DataError for a bad image."""
    try:
        with _torchvision_deprecation_silenced():
            first = _decode_file(paths[0])
    except _ImageError as error:
        problem = _unreadable(os.path.relpath(paths[0], root), error)
        raise DataError(
            f"In the ImageFolder dataset {str(root)!r}, {problem}"
        ) from error
    size = (int(first.shape[1]), int(first.shape[2]))
    chunk_size = max(1, min(_MAX_CHUNK_IMAGES, _MAX_CHUNK_BYTES // first.numel()))
    chunks = _DecodeChunks(root, paths, size, chunk_size)
    workers = _decoder_process_count(len(paths), len(chunks))
    logger.info(
        "Decoding %d images from %s with %d worker processes",
        len(paths),
        root,
        workers,
    )
    try:
        return _run_decoder(chunks, workers, on_progress)
    except RuntimeError as error:
        if workers == 0:
            raise
        # Worker processes can fail to start or to share memory (for example
        # with a small /dev/shm). The images may be fine, so retry in-process.
        logger.warning(
            "Decoder worker processes failed (%s); decoding in this process instead",
            error,
        )
        return _run_decoder(chunks, 0, on_progress)


def _run_decoder(
    chunks: _DecodeChunks, workers: int, on_progress: ProgressCallback | None
) -> torch.Tensor:
    height, width = chunks.size
    total = len(chunks.paths)
    images = torch.empty((total, 3, height, width), dtype=torch.uint8)
    loader = torch.utils.data.DataLoader(chunks, batch_size=None, num_workers=workers)
    done = 0
    for index, (chunk, problem) in enumerate(loader):
        if problem is not None:
            raise DataError(
                f"In the ImageFolder dataset {str(chunks.root)!r}, {problem}"
            )
        start = index * chunks.chunk_size
        images[start : start + chunk.shape[0]] = chunk
        done += chunk.shape[0]
        if on_progress is not None:
            on_progress(done, total)
    return images


def _decoder_process_count(num_images: int, num_chunks: int) -> int:
    """Return the number of DataLoader worker processes to decode with.

    0 means decoding in the calling process.
    """
    if num_images < _MIN_IMAGES_FOR_WORKERS:
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # sched_getaffinity is missing on macOS and Windows
        cpus = os.cpu_count() or 1
    if cpus < 2:
        return 0
    return min(cpus, num_chunks, _MAX_WORKERS)


# --- Cache files ---------------------------------------------------------------


def _files_in(folder: Path) -> list[str]:
    try:
        return sorted(str(entry) for entry in folder.iterdir() if entry.is_file())
    except OSError as error:
        raise DataError(
            f"The dataset folder {str(folder)!r} cannot be read: {error}. Check "
            "its permissions."
        ) from error


def _stat_fingerprint(paths: Iterable[str], extra: Iterable[str] = ()) -> str:
    """Hash the path, size and modification time of every file.

    Adding, removing, renaming or rewriting a file changes the result, and so
    does a change in ``extra`` (the class names). File contents are not read.
    """
    digest = hashlib.sha256(f"format {_CACHE_FORMAT}\n".encode())
    for item in extra:
        digest.update(f"class {item}\n".encode())
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError as error:
            raise DataError(
                f"The dataset file {path!r} cannot be read: {error}. Check that "
                "it exists and that its permissions allow reading."
            ) from error
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _cache_prefix(kind: str, source_path: Path) -> str:
    """Return the file-name prefix that all cache files of one source share."""
    path_hash = hashlib.sha256(str(source_path).encode()).hexdigest()[:16]
    return f"{kind}-{path_hash}-"


def _cache_file(
    cache_dir: Path, kind: str, source_path: Path, fingerprint: str
) -> Path:
    return cache_dir / f"{_cache_prefix(kind, source_path)}{fingerprint[:16]}.pt"


def _read_cache(
    cache_dir: Path, kind: str, source_path: Path, fingerprint: str
) -> _UInt8Images | None:
    """Return the cached images of a source, or None when there is no usable
    cache file. A damaged cache file is logged as a warning and ignored."""
    path = _cache_file(cache_dir, kind, source_path, fingerprint)
    if not path.is_file():
        return None
    started = time.perf_counter()
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    # torch.load raises many types for damaged files (RuntimeError,
    # UnpicklingError, EOFError, BadZipFile, ...), and any of them means "rebuild".
    except Exception as error:
        logger.warning(
            "Ignoring unreadable cache file %s (%s); rebuilding it", path, error
        )
        return None
    problem = _cache_content_problem(content, fingerprint)
    if problem is not None:
        logger.warning("Ignoring cache file %s (%s); rebuilding it", path, problem)
        return None
    logger.info("Read cache file %s in %.1f s", path, time.perf_counter() - started)
    return _UInt8Images(
        train_images=content["train_images"],
        train_labels=content["train_labels"],
        test_images=content["test_images"],
        test_labels=content["test_labels"],
        classes=tuple(content["classes"]),
    )


def _cache_content_problem(content: object, fingerprint: str) -> str | None:
    """Describe why ``content`` is not a valid cache for ``fingerprint``, or
    return None when it is."""
    if not isinstance(content, dict):
        return f"expected a dict, found {type(content).__name__}"
    if (
        content.get("format") != _CACHE_FORMAT
        or content.get("fingerprint") != fingerprint
    ):
        return "written for another format or another version of the files"
    classes = content.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        return "'classes' is not a list of strings"
    for split in ("train", "test"):
        images = content.get(f"{split}_images")
        labels = content.get(f"{split}_labels")
        if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
            return f"{split} images or labels are missing"
        if images.dtype != torch.uint8 or images.ndim != 4:
            return f"{split} images are not a 4-D uint8 tensor"
        if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
            return f"{split} labels do not match the images"
    return None


def _write_cache(
    cache_dir: Path,
    kind: str,
    source_path: Path,
    fingerprint: str,
    decoded: _UInt8Images,
) -> None:
    """Write the cache file atomically, or log a warning when that fails.

    The content goes to a temporary file in the cache folder that replaces
    the final name only once complete, so a killed run leaves no partial cache.
    Older cache files of the same source are removed afterwards.
    """
    path = _cache_file(cache_dir, kind, source_path, fingerprint)
    content = {
        "format": _CACHE_FORMAT,
        "fingerprint": fingerprint,
        "source": str(source_path),
        "classes": list(decoded.classes),
        "train_images": decoded.train_images.contiguous(),
        "train_labels": decoded.train_labels,
        "test_images": decoded.test_images.contiguous(),
        "test_labels": decoded.test_labels,
    }
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(
            prefix=path.name + ".", suffix=".tmp", dir=cache_dir
        )
    except OSError as error:
        logger.warning(
            "Cannot write a dataset cache in %s (%s); continuing without a cache",
            cache_dir,
            error,
        )
        return
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(content, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except (OSError, RuntimeError) as error:
        logger.warning(
            "Writing the dataset cache %s failed (%s); continuing without a cache",
            path,
            error,
        )
        _remove_quietly(Path(temp_name))
        return
    logger.info("Wrote cache file %s", path)
    _remove_stale_cache_files(cache_dir, _cache_prefix(kind, source_path), path)


def _remove_stale_cache_files(cache_dir: Path, prefix: str, keep: Path) -> None:
    """Delete older cache files of a source, and temporary files that a killed
    run left behind. Recent temporary files may belong to a running load."""
    now = time.time()
    for candidate in cache_dir.glob(prefix + "*"):
        if candidate == keep:
            continue
        if candidate.name.endswith(".tmp"):
            try:
                age = now - candidate.stat().st_mtime
            except OSError:
                continue
            if age < _STALE_TEMP_SECONDS:
                continue
        _remove_quietly(candidate)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as error:
        logger.warning("Cannot remove old cache file %s: %s", path, error)
