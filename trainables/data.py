"""Datasets (train/val/test splits) and sharded, reproducible batching for training workers.

"digits" (scikit-learn's 8x8 digits) ships inside a package and is the offline default; "mnist",
"fashion_mnist" and "cifar10" are torchvision datasets read from (or downloaded to) a data directory.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import queue
import socket
import tarfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from optsweep.errors import OptsweepError

if TYPE_CHECKING:  # numpy and torch are imported where data is loaded or batched: the names cost neither
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset, TensorDataset

try:
    import fcntl
except ImportError:  # Windows: concurrent downloads to one directory are then not serialised.
    fcntl = None  # type: ignore[assignment]

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "cifar10")
DATA_DIR_ENV = "OPTSWEEP_DATA_DIR"
# Before a download, every download host is probed for this long (DNS included), so that an offline
# machine fails in seconds instead of waiting for urllib's unbounded connects to each mirror.
REACHABILITY_TIMEOUT_S = 5.0


class DatasetUnavailableError(OptsweepError):
    """A dataset is not on disk and could not be downloaded."""


@dataclass(frozen=True)
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]  # (C, H, W) of one example


@dataclass(frozen=True)
class DatasetShape:
    """What a model needs to know of a dataset, without loading it."""

    input_shape: tuple[int, ...]  # (C, H, W) of one example
    num_classes: int


def spec(name: str) -> DatasetShape:
    """The input shape and class count of dataset `name`."""
    check_dataset_name(name)
    if name == "digits":
        return DatasetShape((1, 8, 8), 10)
    return DatasetShape(_TORCHVISION[name].input_shape, _TORCHVISION[name].num_classes)


def dataset_names() -> list[str]:
    return list(DATASETS)


def check_dataset_name(name: str) -> str:
    """Return `name` if it is a known dataset, else raise ValueError listing the valid names."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    return name


def default_data_dir() -> str:
    return os.environ.get(DATA_DIR_ENV) or os.path.join("~", ".cache", "optsweep", "data")


def load_splits(name: str, data_dir: str | None = None, download: bool = True, split_seed: int = 0) -> Splits:
    """Train/val/test splits of dataset `name`; `split_seed` fixes which examples are held out for val."""
    check_dataset_name(name)
    if name == "digits":
        return _digits_splits(split_seed)
    root = os.path.abspath(os.path.expanduser(data_dir or default_data_dir()))
    return _torchvision_splits(_TORCHVISION[name], root, download, split_seed)


# ----------------------------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    import numpy as np
    from sklearn.datasets import load_digits  # scikit-learn takes a second to import: only when used

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]  # pixels are 0..16
    labels = bunch.target.astype(np.int64)
    images.flags.writeable = False  # shared by every call in this process
    labels.flags.writeable = False
    return images, labels


def _digits_indices(split_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted train/val/test row indices into load_digits(): 60/20/20, stratified by class."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    _, labels = _digits_raw()
    trainval, test = train_test_split(
        np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=split_seed
    )
    train, val = train_test_split(
        trainval, test_size=0.25, stratify=labels[trainval], random_state=split_seed
    )
    return np.sort(train), np.sort(val), np.sort(test)


def _digits_splits(split_seed: int) -> Splits:
    images, labels = _digits_raw()
    train, val, test = _digits_indices(split_seed)
    mean, std = images[train].mean(), images[train].std()

    import numpy as np
    import torch
    from torch.utils.data import TensorDataset

    def tensors(idx: np.ndarray) -> TensorDataset:
        x = ((images[idx] - mean) / std).astype(np.float32)
        return TensorDataset(torch.from_numpy(x), torch.from_numpy(labels[idx]))

    return Splits(tensors(train), tensors(val), tensors(test), num_classes=10, input_shape=(1, 8, 8))


# ------------------------------------------------------------------------------------ torchvision


@dataclass(frozen=True)
class _TorchvisionSpec:
    """A torchvision dataset; torchvision itself is imported only when one is used (it takes seconds)."""

    name: str
    dataset: str | type  # its class, or the class's name in torchvision.datasets
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_shape: tuple[int, int, int]
    num_classes: int
    val_size: int
    augment: bool
    layout_hint: str  # what the user must put into the data directory

    @property
    def cls(self) -> type:
        if isinstance(self.dataset, type):
            return self.dataset
        from torchvision import datasets

        return getattr(datasets, self.dataset)

    @property
    def urls(self) -> tuple[str, ...]:
        """Where torchvision downloads from (used for the reachability probe)."""
        mirrors = getattr(self.cls, "mirrors", None)
        return tuple(mirrors) if mirrors else (self.cls.url,)


_TORCHVISION: dict[str, _TorchvisionSpec] = {
    "mnist": _TorchvisionSpec(
        "mnist",
        "MNIST",
        (0.1307,),
        (0.3081,),
        (1, 28, 28),
        10,
        5000,
        False,
        "the 'MNIST' folder (MNIST/raw/ holding the four unzipped idx files, e.g. train-images-idx3-ubyte)",
    ),
    "fashion_mnist": _TorchvisionSpec(
        "fashion_mnist",
        "FashionMNIST",
        (0.2860,),
        (0.3530,),
        (1, 28, 28),
        10,
        5000,
        False,
        "the 'FashionMNIST' folder (FashionMNIST/raw/ holding the four unzipped idx files, "
        "e.g. train-images-idx3-ubyte)",
    ),
    "cifar10": _TorchvisionSpec(
        "cifar10",
        "CIFAR10",
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        (3, 32, 32),
        10,
        5000,
        True,
        "the extracted 'cifar-10-batches-py' folder",
    ),
}


class _Transformed:
    """Applies `transform` to the input of `base[i]`; lets train and val share one copy of the data (a
    map-style dataset: what torch's Subset and DataLoader need is `__getitem__` and `__len__`)."""

    def __init__(self, base: Dataset, transform: Any) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.base[index]
        return self.transform(x), y


def _torchvision_splits(spec: _TorchvisionSpec, root: str, download: bool, split_seed: int) -> Splits:
    import numpy as np
    from sklearn.model_selection import train_test_split
    from torch.utils.data import Subset
    from torchvision import transforms as T

    plain = T.Compose([T.ToTensor(), T.Normalize(spec.mean, spec.std)])
    augmented = plain
    if spec.augment:
        augmented = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), plain])
    full_train = _open(spec, root, train=True, download=download)
    test = _open(spec, root, train=False, download=download)
    targets = np.asarray(full_train.targets)  # type: ignore[attr-defined]
    train_idx, val_idx = train_test_split(
        np.arange(len(targets)), test_size=spec.val_size, stratify=targets, random_state=split_seed
    )
    return Splits(
        train=Subset(_Transformed(full_train, augmented), np.sort(train_idx).tolist()),
        val=Subset(_Transformed(full_train, plain), np.sort(val_idx).tolist()),
        test=_Transformed(test, plain),
        num_classes=len(np.unique(targets)),
        input_shape=spec.input_shape,
    )


def _open(spec: _TorchvisionSpec, root: str, *, train: bool, download: bool) -> Dataset:
    """The torchvision dataset without a transform, downloading it first if allowed and needed."""
    try:
        return spec.cls(root, train=train, download=False)
    except RuntimeError:  # torchvision: "Dataset not found or corrupted"
        if not download:
            raise _unavailable(spec, root, None) from None
    try:
        os.makedirs(root, exist_ok=True)
        with _download_lock(os.path.join(root, f".optsweep-{spec.name}.lock")):
            with contextlib.suppress(RuntimeError):  # another process may have just downloaded it
                return spec.cls(root, train=train, download=False)
            unreachable = _unreachable_reason(spec.urls, REACHABILITY_TIMEOUT_S)
            if unreachable:
                raise _unavailable(spec, root, unreachable)
            return spec.cls(root, train=train, download=True)
    except (RuntimeError, OSError, EOFError, tarfile.TarError) as e:  # URLError is an OSError
        raise _unavailable(spec, root, f"{type(e).__name__}: {e}") from e


def _unavailable(spec: _TorchvisionSpec, root: str, reason: str | None) -> DatasetUnavailableError:
    """The one-line error for a missing dataset; `reason` says why the download failed (None: not tried)."""
    if reason is None:
        problem = "download=False, so it was not downloaded"
    else:
        reason = " ".join(reason.split())  # torchvision's messages span lines; keep ours on one
        if len(reason) > 300:
            reason = reason[:297] + "..."
        problem = f"could not be downloaded ({reason})"
    return DatasetUnavailableError(
        f"{spec.name} is not in {root} and {problem}: download it on a machine with network access, "
        f"or put {spec.layout_hint} in {root}, and pass --data-dir {root}"
    )


@contextlib.contextmanager
def _download_lock(path: str) -> Iterator[None]:
    """Serialise downloads into one directory across processes (parallel trials on one node)."""
    if fcntl is None:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _unreachable_reason(urls: tuple[str, ...], timeout: float) -> str | None:
    """None if any url's host (or its configured proxy) accepts a TCP connection within `timeout`
    seconds, else why not. DNS lookups run in daemon threads, so a stuck resolver is bounded too."""
    addresses = sorted({_connect_address(url) for url in urls})
    results: queue.SimpleQueue[tuple[str, str | None]] = queue.SimpleQueue()
    for host, port in addresses:
        threading.Thread(target=_probe, args=(host, port, timeout, results), daemon=True).start()
    errors = {f"{host}:{port}": f"no answer within {timeout:g} s" for host, port in addresses}
    deadline = time.monotonic() + timeout
    for _ in addresses:
        try:
            address, error = results.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if error is None:
            return None
        errors[address] = error
    return "cannot reach " + "; ".join(f"{address} ({error})" for address, error in errors.items())


def _connect_address(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port


def _probe(host: str, port: int, timeout: float, results: queue.SimpleQueue[tuple[str, str | None]]) -> None:
    """Put (address, None) into `results` if host:port accepts a TCP connection, else (address, error)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            results.put((f"{host}:{port}", None))
    except OSError as e:
        results.put((f"{host}:{port}", str(e)))


# --------------------------------------------------------------------------------------- batching


class ShardedLoader:
    """Batches of this rank's shard of `dataset`, with torch's DistributedSampler semantics.

    Every rank draws the same permutation from `seed + epoch` (or keeps the dataset order when
    `shuffle` is False), pads it by wrapping around to a multiple of `world_size`, and takes
    `indices[rank::world_size]`. `drop_last` drops this rank's final incomplete batch.

    In-memory TensorDatasets are indexed directly, one fancy-index per batch (DataLoader's per-sample
    collate costs more than a small model's whole step); other datasets go through a DataLoader.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        num_workers: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        import torch
        from torch.utils.data import DataLoader, TensorDataset
        from torch.utils.data.distributed import DistributedSampler

        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=False
        )
        self._tensors = dataset.tensors if isinstance(dataset, TensorDataset) else None
        self._loader: DataLoader | None = None
        if self._tensors is None:
            # A private generator: DataLoader would otherwise draw its worker seeds from the global RNG,
            # shifting every later random draw of the training loop. Workers are not persistent, so
            # that each epoch's workers are seeded afresh by set_epoch.
            self._generator = torch.Generator()
            self._loader = DataLoader(
                dataset,
                batch_size=batch_size,
                sampler=self.sampler,
                drop_last=drop_last,
                num_workers=num_workers,
                generator=self._generator,
            )
        self.set_epoch(0)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (padding included)."""
        return self.sampler.num_samples

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select epoch `epoch`'s order; call before iterating each epoch, as with DistributedSampler."""
        self.sampler.set_epoch(epoch)
        if self._loader is not None:
            # Worker seeds (random augmentations) then depend only on (seed, rank, epoch): a run resumed
            # at epoch k augments as an uninterrupted one would.
            import numpy as np

            words = [w & 0xFFFFFFFF for w in (self.seed, self.rank, epoch)]
            self._generator.manual_seed(int(np.random.SeedSequence(words).generate_state(1)[0]))

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        if self._loader is not None:
            for batch in self._loader:
                yield tuple(batch)
            return
        assert self._tensors is not None
        import torch

        indices = torch.tensor(list(self.sampler), dtype=torch.long)
        for i in range(len(self)):
            batch = indices[i * self.batch_size : (i + 1) * self.batch_size]
            yield tuple(t[batch] for t in self._tensors)


def eval_shard(dataset: Dataset, rank: int, world_size: int) -> Dataset:
    """Rank `rank`'s part of an evaluation split: unlike the padded training shards, every example is in
    exactly one shard, so metrics summed over ranks are exact."""
    if world_size == 1:
        return dataset
    from torch.utils.data import Subset, TensorDataset

    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[rank::world_size] for t in dataset.tensors))
    return Subset(dataset, list(range(rank, len(dataset), world_size)))  # type: ignore[arg-type]


def make_loader(dataset: Dataset, batch_size: int, **options: Any) -> ShardedLoader:
    """A ShardedLoader over a rank's shard of `dataset` (options: shuffle, seed, rank, world_size,
    drop_last, num_workers; see ShardedLoader)."""
    return ShardedLoader(dataset, batch_size, **options)
