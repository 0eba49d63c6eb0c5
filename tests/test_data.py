"""Tests for blocksearch.data: sources, ImageFolder decoding, caching, errors.

ImageFolder trees are written as real PNG/JPEG/BMP files under tmp_path.
torchvision's CIFAR10 class is replaced by a fake, because tests must not
download anything and the real batches are not part of the repository.
"""

from __future__ import annotations

import logging
import os
import re
import urllib.error
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
import torchvision.datasets
import torchvision.transforms.functional as tvf
from PIL import Image

from blocksearch import data
from blocksearch.data import (
    CACHE_ENV_VAR,
    DATA_ENV_VAR,
    Dataset,
    load_dataset,
    resolve_cache_dir,
    resolve_source,
)
from blocksearch.errors import BlocksearchError, DataError

HEIGHT, WIDTH = 4, 5


@pytest.fixture(autouse=True)
def isolated_data_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the user's $BLOCKSEARCH_DATA out, and keep caches inside tmp_path."""
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "env-cache"))


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def pattern(seed: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Return a (height, width, 3) uint8 image that differs for each seed."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


def write_image(path: Path, pixels: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    if mode is not None:
        image = image.convert(mode)
    image.save(path)


def make_tree(
    root: Path,
    layout: dict[str, dict[str, int]],
    size: tuple[int, int] = (HEIGHT, WIDTH),
    suffix: str = ".png",
) -> Path:
    """Write ``layout[split][class]`` distinct images per class folder."""
    seed = 0
    for split, classes in layout.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                seed += 1
                pixels = pattern(seed, *size)
                write_image(root / split / name / f"{index:03d}{suffix}", pixels)
    return root


def small_tree(root: Path) -> Path:
    """Two classes whose sorted order differs from the order they are written."""
    layout = {"train": {"zebra": 3, "ant": 2}, "test": {"zebra": 1, "ant": 2}}
    return make_tree(root, layout)


def cache_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.pt"))


def assert_same_dataset(first: Dataset, second: Dataset) -> None:
    assert first.name == second.name
    assert first.classes == second.classes
    assert torch.equal(first.train_images, second.train_images)
    assert torch.equal(first.train_labels, second.train_labels)
    assert torch.equal(first.test_images, second.test_images)
    assert torch.equal(first.test_labels, second.test_labels)


def fail_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def decode_file(path: str) -> torch.Tensor:
        raise AssertionError(f"decoded {path} although a valid cache exists")

    monkeypatch.setattr(data, "_decode_file", decode_file)


# --- ImageFolder loading ---------------------------------------------------------


def test_load_dataset_image_folder_shapes(tmp_path: Path, cache_dir: Path) -> None:
    root = small_tree(tmp_path / "tree")

    dataset = load_dataset(str(root), cache_dir=cache_dir)

    assert dataset.name == f"imagefolder:{root.resolve()}"
    assert dataset.train_images.shape == (5, 3 * HEIGHT * WIDTH)
    assert dataset.test_images.shape == (3, 3 * HEIGHT * WIDTH)
    assert dataset.train_images.dtype == torch.float32
    assert dataset.test_images.dtype == torch.float32
    assert dataset.train_labels.dtype == torch.int64
    assert dataset.test_labels.dtype == torch.int64
    assert dataset.in_features == 3 * HEIGHT * WIDTH
    assert dataset.num_classes == 2
    assert dataset.classes == ("ant", "zebra")


def test_load_dataset_labels_match_torchvision(tmp_path: Path, cache_dir: Path) -> None:
    root = small_tree(tmp_path / "tree")

    dataset = load_dataset(str(root), cache_dir=cache_dir)

    for split, labels in (
        ("train", dataset.train_labels),
        ("test", dataset.test_labels),
    ):
        reference = torchvision.datasets.ImageFolder(str(root / split))
        assert tuple(reference.classes) == dataset.classes
        assert labels.tolist() == reference.targets


def test_load_dataset_pixels_match_torchvision(tmp_path: Path, cache_dir: Path) -> None:
    root = small_tree(tmp_path / "tree")

    dataset = load_dataset(str(root), cache_dir=cache_dir)

    reference = torchvision.datasets.ImageFolder(str(root / "train"))
    for index, (path, _) in enumerate(reference.samples):
        with Image.open(path) as image:
            tensor = tvf.to_tensor(image.convert("RGB"))
        expected = tvf.normalize(tensor, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]).flatten()
        torch.testing.assert_close(dataset.train_images[index], expected)


def test_load_dataset_white_and_black_pixels(tmp_path: Path, cache_dir: Path) -> None:
    pixels = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    pixels[0, 0] = (255, 255, 255)
    pixels[1, 2] = (51, 0, 255)
    for split in ("train", "test"):
        write_image(tmp_path / "tree" / split / "only" / "image.png", pixels)

    dataset = load_dataset(str(tmp_path / "tree"), cache_dir=cache_dir)

    image = dataset.train_images[0].reshape(3, HEIGHT, WIDTH)
    assert image[:, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert image[:, 0, 1].tolist() == [-1.0, -1.0, -1.0]
    torch.testing.assert_close(
        image[:, 1, 2], torch.tensor([51 / 127.5 - 1, -1.0, 1.0])
    )
    # Channel-major flattening puts the red channel of pixel (1, 2) at 1*W + 2.
    assert dataset.train_images[0, 1 * WIDTH + 2].item() == pytest.approx(-0.6)
    assert dataset.train_images.min().item() == -1.0
    assert dataset.train_images.max().item() == 1.0


def test_load_dataset_other_image_formats(tmp_path: Path, cache_dir: Path) -> None:
    root = tmp_path / "tree"
    gray = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    write_image(root / "train" / "a" / "gray.png", gray, mode="L")
    write_image(root / "train" / "a" / "alpha.png", gray, mode="RGBA")
    write_image(root / "train" / "a" / "bitmap.bmp", gray)
    write_image(root / "train" / "a" / "photo.jpg", gray)
    deep = np.full((HEIGHT, WIDTH), 65535, np.uint16)
    (root / "test" / "a").mkdir(parents=True)
    Image.fromarray(deep).save(root / "test" / "a" / "deep.png")
    (root / "train" / "a" / "notes.txt").write_text("not an image")

    dataset = load_dataset(str(root), cache_dir=cache_dir)

    assert dataset.train_images.shape == (4, 3 * HEIGHT * WIDTH)
    # JPEG is lossy, the other formats must decode white exactly.
    torch.testing.assert_close(
        dataset.train_images, torch.ones_like(dataset.train_images), atol=0.05, rtol=0
    )
    assert torch.equal(dataset.test_images, torch.ones_like(dataset.test_images))


def test_load_dataset_pillow_only_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = small_tree(tmp_path / "tree")
    with_torchvision = load_dataset(str(root), cache_dir=tmp_path / "cache-1")
    monkeypatch.setattr(data, "_torchvision_decode", None)

    with_pillow = load_dataset(str(root), cache_dir=tmp_path / "cache-2")

    assert_same_dataset(with_torchvision, with_pillow)


def test_load_dataset_relative_and_home_paths(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = small_tree(tmp_path / "tree")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))

    relative = load_dataset("tree", cache_dir=cache_dir)
    home = load_dataset("~/tree", cache_dir=cache_dir)

    assert relative.name == f"imagefolder:{root.resolve()}"
    assert home.name == relative.name


def test_load_dataset_progress_reported(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = small_tree(tmp_path / "tree")
    monkeypatch.setattr(data, "_MAX_CHUNK_IMAGES", 3)
    calls: list[tuple[int, int]] = []

    load_dataset(str(root), cache_dir=cache_dir, on_progress=lambda *a: calls.append(a))
    load_dataset(str(root), cache_dir=cache_dir, on_progress=lambda *a: calls.append(a))

    assert calls == [(3, 8), (6, 8), (8, 8)]


def test_load_dataset_worker_processes_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = {"train": {"a": 6, "b": 6}, "test": {"a": 3, "b": 3}}
    root = make_tree(tmp_path / "tree", layout, suffix=".jpg")
    in_process = load_dataset(str(root), cache_dir=tmp_path / "cache-1")
    monkeypatch.setattr(data, "_MIN_IMAGES_FOR_WORKERS", 1)
    monkeypatch.setattr(data, "_MAX_CHUNK_IMAGES", 4)
    calls: list[tuple[int, int]] = []

    parallel = load_dataset(
        str(root),
        cache_dir=tmp_path / "cache-2",
        on_progress=lambda *a: calls.append(a),
    )

    assert_same_dataset(in_process, parallel)
    assert calls == [(4, 18), (8, 18), (12, 18), (16, 18), (18, 18)]


def test_load_dataset_worker_error_reported(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(tmp_path / "tree", {"train": {"a": 8}, "test": {"a": 2}})
    (root / "train" / "a" / "006.png").write_bytes(b"damaged")
    monkeypatch.setattr(data, "_MIN_IMAGES_FOR_WORKERS", 1)
    monkeypatch.setattr(data, "_MAX_CHUNK_IMAGES", 3)

    with pytest.raises(DataError, match=r"image 'train/a/006\.png' is not a readable"):
        load_dataset(str(root), cache_dir=cache_dir)


# --- Caching ---------------------------------------------------------------------


def test_load_dataset_second_load_uses_cache(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = small_tree(tmp_path / "tree")
    first = load_dataset(str(root), cache_dir=cache_dir)
    assert len(cache_files(cache_dir)) == 1
    fail_decoding(monkeypatch)

    second = load_dataset(str(root), cache_dir=cache_dir)

    assert_same_dataset(first, second)


def test_load_dataset_cache_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = small_tree(tmp_path / "tree")
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "from-env"))

    load_dataset(str(root))

    assert len(cache_files(tmp_path / "from-env")) == 1


def test_load_dataset_changed_file_rebuilds_cache(
    tmp_path: Path, cache_dir: Path
) -> None:
    root = small_tree(tmp_path / "tree")
    before = load_dataset(str(root), cache_dir=cache_dir)
    changed = root / "train" / "ant" / "000.png"
    write_image(changed, np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    # Move the mtime explicitly: a coarse file-system clock may not tick here.
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))

    after = load_dataset(str(root), cache_dir=cache_dir)

    assert not torch.equal(before.train_images[0], after.train_images[0])
    assert torch.equal(after.train_images[0], -torch.ones(3 * HEIGHT * WIDTH))
    assert torch.equal(before.train_images[1:], after.train_images[1:])
    assert len(cache_files(cache_dir)) == 1


def test_load_dataset_added_file_rebuilds_cache(
    tmp_path: Path, cache_dir: Path
) -> None:
    root = small_tree(tmp_path / "tree")
    before = load_dataset(str(root), cache_dir=cache_dir)
    write_image(root / "test" / "zebra" / "new.png", pattern(99))

    after = load_dataset(str(root), cache_dir=cache_dir)

    assert before.test_images.shape[0] == 3
    assert after.test_images.shape[0] == 4
    assert after.test_labels.tolist() == [0, 0, 1, 1]


def test_load_dataset_removed_file_rebuilds_cache(
    tmp_path: Path, cache_dir: Path
) -> None:
    root = small_tree(tmp_path / "tree")
    load_dataset(str(root), cache_dir=cache_dir)
    (root / "train" / "zebra" / "002.png").unlink()

    after = load_dataset(str(root), cache_dir=cache_dir)

    assert after.train_images.shape[0] == 4


@pytest.mark.parametrize(
    "damage",
    [b"", b"not a torch file", b"PK\x03\x04 truncated zip"],
    ids=["empty", "garbage", "truncated"],
)
def test_load_dataset_corrupt_cache_rebuilt(
    tmp_path: Path,
    cache_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    damage: bytes,
) -> None:
    root = small_tree(tmp_path / "tree")
    first = load_dataset(str(root), cache_dir=cache_dir)
    [cache_file] = cache_files(cache_dir)
    cache_file.write_bytes(damage)

    with caplog.at_level(logging.WARNING, logger="blocksearch.data"):
        rebuilt = load_dataset(str(root), cache_dir=cache_dir)
    fail_decoding(monkeypatch)
    cached = load_dataset(str(root), cache_dir=cache_dir)

    assert "Ignoring unreadable cache file" in caplog.text
    assert_same_dataset(first, rebuilt)
    assert_same_dataset(first, cached)


def test_load_dataset_wrong_cache_content_rebuilt(
    tmp_path: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = small_tree(tmp_path / "tree")
    first = load_dataset(str(root), cache_dir=cache_dir)
    [cache_file] = cache_files(cache_dir)
    content = torch.load(cache_file, weights_only=True)
    content["train_images"] = content["train_images"].to(torch.float32)
    torch.save(content, cache_file)

    with caplog.at_level(logging.WARNING, logger="blocksearch.data"):
        rebuilt = load_dataset(str(root), cache_dir=cache_dir)

    assert "train images are not a 4-D uint8 tensor" in caplog.text
    assert_same_dataset(first, rebuilt)


def test_load_dataset_unwritable_cache_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = small_tree(tmp_path / "tree")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be")

    with caplog.at_level(logging.WARNING, logger="blocksearch.data"):
        dataset = load_dataset(str(root), cache_dir=blocker / "cache")

    assert dataset.train_images.shape[0] == 5
    assert "continuing without a cache" in caplog.text


def test_load_dataset_failed_cache_write_cleans_up(
    tmp_path: Path,
    cache_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = small_tree(tmp_path / "tree")

    def save_half(obj: object, stream: object) -> None:
        stream.write(b"partial content")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save_half)
    with caplog.at_level(logging.WARNING, logger="blocksearch.data"):
        dataset = load_dataset(str(root), cache_dir=cache_dir)

    assert dataset.train_images.shape[0] == 5
    assert "No space left on device" in caplog.text
    assert list(cache_dir.iterdir()) == []


def test_load_dataset_removes_stale_cache_files(
    tmp_path: Path, cache_dir: Path
) -> None:
    root = small_tree(tmp_path / "tree")
    load_dataset(str(root), cache_dir=cache_dir)
    [cache_file] = cache_files(cache_dir)
    prefix = cache_file.name.rsplit("-", 1)[0]
    old_temp = cache_dir / f"{prefix}-0123456789abcdef.pt.x1.tmp"
    new_temp = cache_dir / f"{prefix}-0123456789abcdef.pt.x2.tmp"
    other_source = cache_dir / "imagefolder-0000000000000000-0000000000000000.pt"
    for path in (old_temp, new_temp, other_source):
        path.write_bytes(b"left behind")
    os.utime(old_temp, (0, 0))
    (root / "test" / "ant" / "000.png").unlink()

    load_dataset(str(root), cache_dir=cache_dir)

    remaining = {path.name for path in cache_dir.iterdir()}
    assert cache_file.name not in remaining
    assert old_temp.name not in remaining
    assert new_temp.name in remaining
    assert other_source.name in remaining
    assert len([name for name in remaining if name.startswith(prefix)]) == 2


# --- Source resolution -----------------------------------------------------------


def test_resolve_source_argument_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_ENV_VAR, "/from/env")

    assert resolve_source("synthetic") == "synthetic"


def test_resolve_source_env_var_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_ENV_VAR, "/from/env")

    assert resolve_source(None) == "/from/env"


def test_resolve_source_default_cifar10(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_source(None) == "cifar10"
    monkeypatch.setenv(DATA_ENV_VAR, "  ")
    assert resolve_source(None) == "cifar10"


def test_resolve_cache_dir_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(CACHE_ENV_VAR, "~/env-cache")

    assert resolve_cache_dir(Path("/explicit")) == Path("/explicit")
    assert resolve_cache_dir(None) == tmp_path / "env-cache"
    monkeypatch.delenv(CACHE_ENV_VAR)
    assert resolve_cache_dir(None) == tmp_path / ".cache" / "blocksearch"


def test_load_dataset_env_var_source(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = small_tree(tmp_path / "tree")
    monkeypatch.setenv(DATA_ENV_VAR, str(root))

    dataset = load_dataset(cache_dir=cache_dir)

    assert dataset.name == f"imagefolder:{root.resolve()}"


def test_load_dataset_bad_env_var_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = str(tmp_path / "missing")
    monkeypatch.setenv(DATA_ENV_VAR, missing)

    with pytest.raises(
        DataError, match=re.escape(f"{missing!r} (from $BLOCKSEARCH_DATA)")
    ):
        load_dataset()


# --- Bad inputs --------------------------------------------------------------------


def build_missing_path(root: Path) -> str:
    return str(root / "does-not-exist")


def build_file_path(root: Path) -> str:
    root.mkdir()
    (root / "data.txt").write_text("not a folder")
    return str(root / "data.txt")


def build_plain_folder(root: Path) -> str:
    (root / "images").mkdir(parents=True)
    return str(root)


def build_missing_test(root: Path) -> str:
    return str(make_tree(root, {"train": {"a": 1}}))


def build_missing_train(root: Path) -> str:
    return str(make_tree(root, {"test": {"a": 1}}))


def build_mismatched_classes(root: Path) -> str:
    return str(make_tree(root, {"train": {"a": 1, "b": 1}, "test": {"a": 1, "c": 1}}))


def build_mixed_sizes(root: Path) -> str:
    make_tree(root, {"train": {"a": 2}, "test": {"a": 1}})
    write_image(root / "test" / "a" / "small.png", pattern(7, 2, 3))
    return str(root)


def build_empty_class(root: Path) -> str:
    make_tree(root, {"train": {"a": 1}, "test": {"a": 1}})
    (root / "train" / "b").mkdir()
    (root / "test" / "b").mkdir()
    (root / "test" / "b" / "readme.txt").write_text("no images here")
    return str(root)


def build_no_class_folders(root: Path) -> str:
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    return str(root)


def build_corrupt_image(root: Path) -> str:
    make_tree(root, {"train": {"a": 2}, "test": {"a": 1}})
    (root / "train" / "a" / "001.png").write_bytes(b"this is not a PNG file")
    return str(root)


def build_empty_image(root: Path) -> str:
    make_tree(root, {"train": {"a": 1}, "test": {"a": 1}})
    (root / "train" / "a" / "000.png").write_bytes(b"")
    return str(root)


BAD_SOURCES = [
    ("missing-path", build_missing_path, r"'.*does-not-exist' does not exist\."),
    ("file-path", build_file_path, r"'.*data\.txt' is a file, not a folder"),
    ("plain-folder", build_plain_folder, r"is not a supported layout: .*train/"),
    ("missing-test", build_missing_test, r"is missing its test/ folder"),
    ("missing-train", build_missing_train, r"is missing its train/ folder"),
    (
        "mismatched-classes",
        build_mismatched_classes,
        r"class folders differ between train/ and test/: only in train/: \['b'\], "
        r"only in test/: \['c'\]",
    ),
    (
        "mixed-sizes",
        build_mixed_sizes,
        r"image 'test/a/small\.png' is 3x2 \(width x height\), expected 5x4 like "
        r"'train/a/000\.png'",
    ),
    (
        "empty-class",
        build_empty_class,
        r"train/ class folders contain no images: \['b'\]",
    ),
    ("no-class-folders", build_no_class_folders, r"train/ folder .* contains no class"),
    (
        "corrupt-image",
        build_corrupt_image,
        r"image 'train/a/001\.png' is not a readable image: .*Replace or remove",
    ),
    ("empty-image", build_empty_image, r"image 'train/a/000\.png' is not a readable"),
]


@pytest.mark.parametrize(
    ("build", "message"),
    [(build, message) for _, build, message in BAD_SOURCES],
    ids=[name for name, _, _ in BAD_SOURCES],
)
def test_load_dataset_bad_folder_rejected(
    tmp_path: Path, cache_dir: Path, build, message: str
) -> None:
    source = build(tmp_path / "bad")

    with pytest.raises(DataError, match=message):
        load_dataset(source, cache_dir=cache_dir)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", r"The dataset source is blank: ''"),
        ("synthetic:abc", r"Invalid synthetic dataset source 'synthetic:abc'"),
        ("synthetic:19", r"'synthetic:19'.*at least 20"),
        ("synthetic:-5", r"'synthetic:-5'.*whole number"),
    ],
)
def test_load_dataset_bad_source_rejected(source: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(source)


def test_load_dataset_errors_list_accepted_sources(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"Accepted sources: 'cifar10'.*'synthetic:N'"):
        load_dataset(str(tmp_path / "missing"))


def test_data_error_is_blocksearch_error() -> None:
    assert issubclass(DataError, BlocksearchError)


# --- Synthetic dataset -------------------------------------------------------------


def test_synthetic_default_shapes(tmp_path: Path) -> None:
    dataset = load_dataset("synthetic")

    assert dataset.name == "synthetic"
    assert dataset.train_images.shape == (512, 192)
    assert dataset.test_images.shape == (256, 192)
    assert dataset.in_features == 192
    assert dataset.num_classes == 10
    assert dataset.train_images.dtype == torch.float32
    assert dataset.train_labels.dtype == torch.int64
    assert dataset.train_images.min().item() >= -1.0
    assert dataset.train_images.max().item() <= 1.0
    assert set(dataset.train_labels.tolist()) == set(range(10))
    assert set(dataset.test_labels.tolist()) == set(range(10))
    assert not (tmp_path / "env-cache").exists()


def test_synthetic_size_suffix(tmp_path: Path) -> None:
    dataset = load_dataset("synthetic:100")

    assert dataset.name == "synthetic:100"
    assert dataset.train_images.shape == (100, 192)
    assert dataset.test_images.shape == (50, 192)
    assert torch.bincount(dataset.train_labels).tolist() == [10] * 10


def test_synthetic_deterministic() -> None:
    first = load_dataset("synthetic")
    torch.manual_seed(12345)
    second = load_dataset("synthetic")

    assert_same_dataset(first, second)


def test_synthetic_learnable_by_small_mlp() -> None:
    dataset = load_dataset("synthetic")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(dataset.in_features, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, dataset.num_classes),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    for _ in range(3):
        for start in range(0, dataset.train_images.shape[0], 64):
            images = dataset.train_images[start : start + 64]
            labels = dataset.train_labels[start : start + 64]
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    with torch.no_grad():
        predictions = model(dataset.test_images).argmax(dim=1)
    accuracy = (predictions == dataset.test_labels).float().mean().item()
    assert accuracy > 0.5


# --- CIFAR-10 through torchvision (faked) ------------------------------------------


CIFAR_CLASSES = [f"cifar-class-{index}" for index in range(10)]


def fake_cifar_pixels(train: bool) -> np.ndarray:
    """Return (N, 3, 32, 32) uint8 pixels for the fake CIFAR10 split."""
    count = 20 if train else 10
    values = np.arange(count * 3 * 32 * 32, dtype=np.int64) % 251
    return values.astype(np.uint8).reshape(count, 3, 32, 32) + (0 if train else 3)


class FakeCifar10:
    """Fake torchvision.datasets.CIFAR10 that records its constructor calls."""

    calls: ClassVar[list[tuple[str, bool, bool]]] = []

    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        FakeCifar10.calls.append((root, train, download))
        if download:
            folder = Path(root) / "cifar-10-batches-py"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "data_batch_1").write_bytes(b"downloaded")
        # torchvision exposes a (N, H, W, C) transposed view of (N, C, H, W).
        self.data = fake_cifar_pixels(train).transpose(0, 2, 3, 1)
        self.targets = [index % 10 for index in range(self.data.shape[0])]
        self.classes = list(CIFAR_CLASSES)


@pytest.fixture
def fake_cifar(monkeypatch: pytest.MonkeyPatch) -> type[FakeCifar10]:
    FakeCifar10.calls = []
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCifar10)
    return FakeCifar10


def raise_on_construction(error: BaseException):
    def construct(*args: object, **kwargs: object) -> None:
        raise error

    return construct


def check_fake_cifar_dataset(dataset: Dataset) -> None:
    expected_train = torch.from_numpy(fake_cifar_pixels(True)).reshape(20, -1)
    expected_test = torch.from_numpy(fake_cifar_pixels(False)).reshape(10, -1)
    assert dataset.train_images.shape == (20, 3072)
    assert dataset.test_images.shape == (10, 3072)
    assert torch.equal(dataset.train_images, expected_train / 127.5 - 1)
    assert torch.equal(dataset.test_images, expected_test / 127.5 - 1)
    assert dataset.train_labels.tolist() == [index % 10 for index in range(20)]
    assert dataset.classes == tuple(CIFAR_CLASSES)


@pytest.mark.parametrize("point_at", ["parent", "batches-folder"])
def test_load_dataset_cifar_folder(
    tmp_path: Path,
    cache_dir: Path,
    fake_cifar: type[FakeCifar10],
    monkeypatch: pytest.MonkeyPatch,
    point_at: str,
) -> None:
    batches = tmp_path / "copy" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    (batches / "data_batch_1").write_bytes(b"batch")
    source = batches if point_at == "batches-folder" else batches.parent

    dataset = load_dataset(str(source), cache_dir=cache_dir)
    monkeypatch.setattr(
        torchvision.datasets, "CIFAR10", raise_on_construction(AssertionError())
    )
    cached = load_dataset(str(source), cache_dir=cache_dir)

    root = batches.parent.resolve()
    assert fake_cifar.calls == [(str(root), True, False), (str(root), False, False)]
    assert dataset.name == f"cifar10:{root}"
    check_fake_cifar_dataset(dataset)
    assert_same_dataset(dataset, cached)


def test_load_dataset_cifar_folder_corrupted(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    error = RuntimeError("Dataset not found or corrupted.")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", raise_on_construction(error))

    with pytest.raises(
        DataError, match=r"cifar-10-batches-py' is incomplete or corrupt"
    ):
        load_dataset(str(tmp_path), cache_dir=cache_dir)


def test_load_dataset_cifar10_downloads_to_cache(
    cache_dir: Path, fake_cifar: type[FakeCifar10], monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = load_dataset("cifar10", cache_dir=cache_dir)
    monkeypatch.setattr(
        torchvision.datasets, "CIFAR10", raise_on_construction(AssertionError())
    )
    cached = load_dataset("cifar10", cache_dir=cache_dir)

    root = str(cache_dir / "torchvision")
    assert fake_cifar.calls == [(root, True, True), (root, False, False)]
    assert dataset.name == "cifar10"
    check_fake_cifar_dataset(dataset)
    assert_same_dataset(dataset, cached)


@pytest.mark.parametrize(
    "error",
    [
        urllib.error.URLError("[Errno -3] Temporary failure in name resolution"),
        OSError(101, "Network is unreachable"),
        RuntimeError("File not found or corrupted."),
    ],
    ids=["url-error", "os-error", "runtime-error"],
)
def test_load_dataset_cifar10_download_failure(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", raise_on_construction(error))

    with pytest.raises(
        DataError, match=r"Downloading CIFAR-10 into .* failed"
    ) as caught:
        load_dataset("cifar10", cache_dir=cache_dir)

    message = str(caught.value)
    assert "--data PATH" in message
    assert "$BLOCKSEARCH_DATA" in message
    assert "train/<class>/*.jpg and test/<class>/*.jpg" in message
    assert "cifar-10-batches-py" in message


def test_load_dataset_cifar10_download_disabled(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = RuntimeError("Dataset not found or corrupted.")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", raise_on_construction(error))

    with pytest.raises(DataError, match=r"downloading is disabled.*--data PATH"):
        load_dataset("cifar10", cache_dir=cache_dir, download=False)


# --- Dataset container -------------------------------------------------------------


def test_dataset_to_device() -> None:
    dataset = load_dataset("synthetic:20")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    for device in devices:
        moved = dataset.to(device)
        assert moved.train_images.device.type == device
        assert moved.test_labels.device.type == device
        assert moved.classes == dataset.classes
        assert torch.equal(moved.train_images.cpu(), dataset.train_images)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train_labels": torch.zeros(3, dtype=torch.int64)}, r"4 images but 3 labels"),
        ({"train_labels": torch.zeros(4, dtype=torch.int32)}, r"1-D int64 tensor"),
        ({"test_images": torch.zeros(2, 5)}, r"6 features but test images have 5"),
        ({"test_labels": torch.tensor([0, 2])}, r"labels span 0\.\.2"),
        ({"train_images": torch.zeros(4, 6, dtype=torch.uint8)}, r"floating-point"),
    ],
)
def test_dataset_inconsistent_tensors_rejected(change: dict, message: str) -> None:
    fields = {
        "name": "handmade",
        "train_images": torch.zeros(4, 6),
        "train_labels": torch.tensor([0, 1, 0, 1]),
        "test_images": torch.zeros(2, 6),
        "test_labels": torch.tensor([1, 0]),
        "classes": ("a", "b"),
    }
    fields.update(change)

    with pytest.raises(ValueError, match=message):
        Dataset(**fields)
