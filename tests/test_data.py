import itertools
import math
import os
import socket
import struct
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from optsweep.trainables import data
from optsweep.trainables.data import DatasetUnavailableError, load_splits, make_loader

# ------------------------------------------------------------------------------------------ names


def test_dataset_names_and_check() -> None:
    assert data.dataset_names() == ["digits", "mnist", "fashion_mnist", "cifar10"]
    for name in data.dataset_names():
        assert data.check_dataset_name(name) == name


@pytest.mark.parametrize("call", [data.check_dataset_name, load_splits])
def test_unknown_dataset_names_the_value_and_the_valid_ones(call) -> None:
    with pytest.raises(ValueError, match=r"'cifar100'.*digits, mnist, fashion_mnist, cifar10"):
        call("cifar100")


def test_default_data_dir_honours_the_environment(monkeypatch) -> None:
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    assert data.default_data_dir() == os.path.join("~", ".cache", "optsweep", "data")
    monkeypatch.setenv(data.DATA_DIR_ENV, "/srv/datasets")
    assert data.default_data_dir() == "/srv/datasets"


# ----------------------------------------------------------------------------------------- digits


def test_digits_splits_shapes_and_types() -> None:
    splits = load_splits("digits")
    assert splits.num_classes == 10
    assert splits.input_shape == (1, 8, 8)
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [1077, 360, 360]
    for split in (splits.train, splits.val, splits.test):
        assert isinstance(split, TensorDataset)
        x, y = split.tensors
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8)
        assert y.dtype == torch.int64


def test_digits_indices_are_disjoint_cover_everything_and_are_stratified() -> None:
    labels = load_digits().target
    train, val, test = data._digits_indices(0)
    assert len(train) + len(val) + len(test) == 1797
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.arange(1797))
    for split, fraction in ((train, 0.6), (val, 0.2), (test, 0.2)):
        counts = np.bincount(labels[split], minlength=10)
        assert counts.min() > 0
        # Stratified: each class's share matches the whole set's to within a couple of examples.
        assert np.all(np.abs(counts - fraction * np.bincount(labels)) <= 2)


def test_digits_split_is_fixed_by_split_seed() -> None:
    a, b = load_splits("digits"), load_splits("digits", split_seed=0)
    other = load_splits("digits", split_seed=1)
    for part in ("train", "val", "test"):
        pairs = zip(getattr(a, part).tensors, getattr(b, part).tensors, strict=True)
        assert all(torch.equal(u, v) for u, v in pairs)
    assert not np.array_equal(data._digits_indices(0)[1], data._digits_indices(1)[1])
    assert not torch.equal(a.val.tensors[0], other.val.tensors[0])


def test_digits_are_standardised_with_train_statistics() -> None:
    raw = (load_digits().images / 16.0).astype(np.float32)
    train_idx, val_idx, _ = data._digits_indices(0)
    mean, std = raw[train_idx].mean(), raw[train_idx].std()
    splits = load_splits("digits")
    train_x, val_x = splits.train.tensors[0], splits.val.tensors[0]
    assert abs(train_x.mean().item()) < 1e-5 and abs(train_x.std(correction=0).item() - 1) < 1e-5
    assert abs(val_x.mean().item()) > 1e-4  # val is not standardised with its own statistics
    expected = torch.from_numpy((raw[val_idx] - mean) / std).unsqueeze(1)
    torch.testing.assert_close(val_x, expected)
    assert torch.equal(splits.val.tensors[1], torch.from_numpy(load_digits().target[val_idx]))


def test_digits_calls_do_not_share_mutable_tensors() -> None:
    first = load_splits("digits")
    first.train.tensors[0].zero_()
    assert load_splits("digits").train.tensors[0].abs().sum() > 0


# ------------------------------------------------------------------------------ torchvision: offline


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("mnist", "'MNIST' folder"),
        ("fashion_mnist", "'FashionMNIST' folder"),
        ("cifar10", "'cifar-10-batches-py'"),
    ],
)
@pytest.mark.parametrize("download", [True, False])
def test_missing_dataset_raises_a_one_line_actionable_error(tmp_path, name, hint, download) -> None:
    # No machine here reaches the internet, so download=True really fails; where one does, the download
    # would succeed, so the offline path cannot be observed there.
    if download and data._unreachable_reason(data._TORCHVISION[name].urls, 2.0) is None:
        pytest.skip(f"{name}'s download hosts are reachable from here")
    root = tmp_path / "data"
    start = time.monotonic()
    with pytest.raises(DatasetUnavailableError) as info:
        load_splits(name, str(root), download=download)
    assert time.monotonic() - start < data.REACHABILITY_TIMEOUT_S + 5
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{name} is not in {root} and ")
    assert hint in message and f"--data-dir {root}" in message
    assert ("download=False" in message) == (not download)
    assert isinstance(info.value, ValueError)


def test_relative_data_dir_is_reported_as_absolute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetUnavailableError, match=f"not in {tmp_path / 'rel'} "):
        load_splits("mnist", "rel", download=False)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def listener():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture
def no_proxy_env(monkeypatch):
    for var in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)


def test_reachability_probe(listener, no_proxy_env) -> None:
    assert data._unreachable_reason((f"http://127.0.0.1:{listener}/x.tar.gz",), 2.0) is None
    closed = f"http://127.0.0.1:{_closed_port()}/"
    assert data._unreachable_reason((closed, f"http://127.0.0.1:{listener}/"), 2.0) is None
    reason = data._unreachable_reason((closed, "https://optsweep-test.invalid/data.tgz"), 2.0)
    assert reason.startswith("cannot reach ") and "optsweep-test.invalid:443" in reason


def test_reachability_probe_goes_through_a_configured_proxy(listener, no_proxy_env, monkeypatch) -> None:
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{listener}")
    assert data._unreachable_reason(("http://optsweep-test.invalid/data.tgz",), 2.0) is None


def test_reachability_probe_is_bounded_when_the_network_hangs(no_proxy_env, monkeypatch) -> None:
    def hang(*args, **kwargs):
        time.sleep(3)
        raise OSError("too late")

    monkeypatch.setattr(data.socket, "create_connection", hang)
    start = time.monotonic()
    reason = data._unreachable_reason(("https://a.example/", "http://b.example/"), 0.3)
    assert time.monotonic() - start < 1.5
    assert reason == (
        "cannot reach a.example:443 (no answer within 0.3 s); b.example:80 (no answer within 0.3 s)"
    )


# ----------------------------------------------------------------------- torchvision: data on disk


def _write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_mnist(root, folder: str, n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    labels = np.arange(n_train) % 10
    _write_idx(raw / "train-images-idx3-ubyte", images)
    _write_idx(raw / "train-labels-idx1-ubyte", labels)
    _write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, size=(n_test, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(n_test) % 10)
    return images, labels


@pytest.mark.parametrize(
    ("name", "folder", "mean", "std"),
    [
        ("mnist", "MNIST", 0.1307, 0.3081),
        ("fashion_mnist", "FashionMNIST", 0.2860, 0.3530),
    ],
)
def test_mnist_like_datasets_from_disk(tmp_path, name, folder, mean, std) -> None:
    images, labels = _fake_mnist(tmp_path, folder, n_train=5100, n_test=30)
    splits = load_splits(name, str(tmp_path), download=False)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (100, 5000, 30)
    assert splits.num_classes == 10 and splits.input_shape == (1, 28, 28)
    train_idx, val_idx = splits.train.indices, splits.val.indices
    assert not set(train_idx) & set(val_idx)
    assert set(np.bincount(labels[train_idx])) == {10}  # stratified hold-out
    x, y = splits.val[7]
    assert x.shape == (1, 28, 28) and y == labels[val_idx[7]]
    torch.testing.assert_close(x[0], torch.from_numpy(images[val_idx[7]] / 255.0 - mean).float() / std)
    again = load_splits(name, str(tmp_path), download=True, split_seed=0)  # present: no download attempt
    assert again.val.indices == val_idx
    assert load_splits(name, str(tmp_path), split_seed=1).val.indices != val_idx


class _FakeCIFAR10(Dataset):
    """Stands in for torchvision's CIFAR10 (whose files are checksummed, so cannot be faked on disk)."""

    def __init__(self, root: str, train: bool, download: bool) -> None:
        self.targets = [i % 10 for i in range(5100 if train else 20)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        pixels = np.random.default_rng(index).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        return Image.fromarray(pixels), self.targets[index]


def test_cifar10_augments_train_only(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(
        data._TORCHVISION, "cifar10", replace(data._TORCHVISION["cifar10"], dataset=_FakeCIFAR10)
    )
    splits = load_splits("cifar10", str(tmp_path))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (100, 5000, 20)
    assert splits.input_shape == (3, 32, 32) and splits.num_classes == 10
    assert splits.train.dataset.base is splits.val.dataset.base  # one copy of the images
    torch.manual_seed(0)
    train_draws = [splits.train[3][0] for _ in range(8)]
    assert train_draws[0].shape == (3, 32, 32)
    assert any(not torch.equal(train_draws[0], d) for d in train_draws[1:])
    assert torch.equal(splits.val[3][0], splits.val[3][0])
    assert torch.equal(splits.test[3][0], splits.test[3][0])
    pixels = np.asarray(_FakeCIFAR10("", False, False)[3][0], dtype=np.float32) / 255
    expected = (pixels - np.array([0.4914, 0.4822, 0.4465])) / np.array([0.2470, 0.2435, 0.2616])
    torch.testing.assert_close(splits.test[3][0], torch.from_numpy(expected).permute(2, 0, 1).float())


# --------------------------------------------------------------------------------------- batching


def _index_dataset(n: int) -> TensorDataset:
    return TensorDataset(torch.arange(n, dtype=torch.float32).unsqueeze(1) * 10, torch.arange(n))


def _reference_batches(ds, batch_size, *, shuffle, seed, epoch, rank, world_size, drop_last):
    sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
    sampler.set_epoch(epoch)
    return list(DataLoader(ds, batch_size=batch_size, sampler=sampler, drop_last=drop_last))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 60),
    batch_size=st.integers(1, 16),
    seed=st.integers(0, 2**31),
    epoch=st.integers(0, 5),
    world_size=st.integers(1, 4),
    rank_fraction=st.floats(0, 0.999),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
)
def test_fast_path_matches_dataloader_with_distributed_sampler(
    n, batch_size, seed, epoch, world_size, rank_fraction, shuffle, drop_last
) -> None:
    rank = int(rank_fraction * world_size)
    ds = _index_dataset(n)
    kw = dict(shuffle=shuffle, seed=seed, rank=rank, world_size=world_size, drop_last=drop_last)
    loader = make_loader(ds, batch_size, **kw)
    loader.set_epoch(epoch)
    fast = list(loader)
    reference = _reference_batches(ds, batch_size, epoch=epoch, **kw)
    assert len(fast) == len(reference) == len(loader)
    for (x, y), (ref_x, ref_y) in zip(fast, reference, strict=True):
        assert torch.equal(x, ref_x) and torch.equal(y, ref_y)
    assert loader.num_samples == math.ceil(n / world_size)


@pytest.mark.parametrize(("shuffle", "drop_last"), list(itertools.product([True, False], repeat=2)))
def test_general_datasets_go_through_dataloader_with_the_same_order(shuffle, drop_last) -> None:
    ds = _index_dataset(37)
    wrapped = Subset(ds, list(range(37)))  # not a TensorDataset: the DataLoader path
    for rank in range(3):
        kw = dict(shuffle=shuffle, seed=5, rank=rank, world_size=3, drop_last=drop_last)
        fast, slow = make_loader(ds, 4, **kw), make_loader(wrapped, 4, **kw)
        assert slow._loader is not None and fast._loader is None
        for epoch in (0, 3):
            fast.set_epoch(epoch)
            slow.set_epoch(epoch)
            fast_batches, slow_batches = list(fast), list(slow)
            assert len(fast_batches) == len(slow_batches) == len(slow)
            for a, b in zip(fast_batches, slow_batches, strict=True):
                assert isinstance(b, tuple) and all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def _epoch_labels(loader) -> list[int]:
    return [int(i) for _, y in loader for i in y]


@pytest.mark.parametrize(("n", "world_size"), [(40, 4), (37, 4), (5, 3), (2, 4)])
def test_rank_shards_are_disjoint_and_cover_the_dataset(n, world_size) -> None:
    ds = _index_dataset(n)
    shards = [
        _epoch_labels(make_loader(ds, 3, shuffle=True, seed=1, rank=r, world_size=world_size))
        for r in range(world_size)
    ]
    assert all(len(s) == math.ceil(n / world_size) for s in shards)
    everything = [i for s in shards for i in s]
    assert set(everything) == set(range(n))
    padding = math.ceil(n / world_size) * world_size - n
    # Only the wrap-around padding repeats samples; without it the shards are disjoint.
    assert len(everything) - len(set(everything)) == padding
    if padding == 0:
        assert all(not set(a) & set(b) for a, b in itertools.combinations(shards, 2))


def test_set_epoch_reshuffles_reproducibly() -> None:
    ds = _index_dataset(50)
    a, b = make_loader(ds, 8, shuffle=True, seed=3), make_loader(ds, 8, shuffle=True, seed=3)
    epoch0 = _epoch_labels(a)
    assert _epoch_labels(a) == epoch0  # without set_epoch the order stays
    a.set_epoch(1)
    epoch1 = _epoch_labels(a)
    assert epoch1 != epoch0 and sorted(epoch1) == sorted(epoch0)
    b.set_epoch(1)
    assert _epoch_labels(b) == epoch1
    b.set_epoch(0)
    assert _epoch_labels(b) == epoch0
    assert _epoch_labels(make_loader(ds, 8, shuffle=True, seed=4)) != epoch0
    assert _epoch_labels(make_loader(ds, 8, shuffle=False, seed=3)) == list(range(50))


def test_len_and_num_samples() -> None:
    ds = _index_dataset(23)
    loader = make_loader(ds, 5, shuffle=True, seed=0, rank=1, world_size=2)
    assert loader.num_samples == 12 and len(loader) == 3
    assert [len(y) for _, y in loader] == [5, 5, 2]
    dropping = make_loader(ds, 5, shuffle=True, seed=0, rank=1, world_size=2, drop_last=True)
    assert len(dropping) == 2 and [len(y) for _, y in dropping] == [5, 5]


def test_dataloader_path_leaves_the_global_rng_alone() -> None:
    loader = make_loader(Subset(_index_dataset(20), range(20)), 4, shuffle=True, seed=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for epoch in range(2):
        loader.set_epoch(epoch)
        list(loader)
    assert torch.equal(torch.rand(3), expected)


class _RandomPerItem(Dataset):
    """Like a randomly augmented dataset: every item draws from the (worker's) torch RNG."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.rand(1), index


def test_worker_augmentation_depends_only_on_seed_rank_and_epoch() -> None:
    def epoch_batches(loader, epoch):
        loader.set_epoch(epoch)
        return [x for x, _ in loader]

    kw = dict(shuffle=True, seed=0, rank=1, world_size=2, num_workers=1)
    uninterrupted = make_loader(_RandomPerItem(), 3, **kw)
    epoch0, epoch1 = epoch_batches(uninterrupted, 0), epoch_batches(uninterrupted, 1)
    resumed = epoch_batches(make_loader(_RandomPerItem(), 3, **kw), 1)
    assert all(torch.equal(a, b) for a, b in zip(epoch1, resumed, strict=True))
    assert not torch.equal(torch.cat(epoch0), torch.cat(epoch1))
    other_rank = epoch_batches(make_loader(_RandomPerItem(), 3, **(kw | dict(rank=0))), 1)
    assert not torch.equal(torch.cat(other_rank), torch.cat(epoch1))


@pytest.mark.parametrize(
    "kwargs", [dict(batch_size=0), dict(rank=2, world_size=2), dict(rank=-1), dict(world_size=0)]
)
def test_bad_loader_arguments(kwargs) -> None:
    args = dict(batch_size=4, shuffle=True, seed=0) | kwargs
    with pytest.raises(ValueError):
        make_loader(_index_dataset(10), args.pop("batch_size"), **args)


def test_digits_loader_end_to_end() -> None:
    splits = load_splits("digits")
    loader = make_loader(splits.train, 64, shuffle=True, seed=0)
    seen = torch.cat([y for _, y in loader])
    assert len(loader) == 17 and torch.equal(seen.sort().values, splits.train.tensors[1].sort().values)
    x, _ = next(iter(loader))
    assert x.shape == (64, 1, 8, 8) and x.dtype == torch.float32
