"""Optimizer step time and state memory: optsweep's optimizers against torch.optim's.

    python benchmarks/optimizer_step.py [--repeats N] [--threads T] [--quick]

For Adam (lr=1e-3), AdamW (lr=1e-3, weight_decay=1e-2) and SGD (lr=0.1, momentum=0.9,
weight_decay=5e-4, the usual ResNet recipe) on ResNet-18's parameter shapes (11.7M fp32), it times one
step of torch's for-loop, foreach and fused implementations, optsweep's default (compiled at this size)
and optsweep's eager step, interleaved in random order within each repeat so that the noise of a shared
machine hits every implementation alike; each step starts with the CPU caches evicted. Each figure is
a median and a ratio against torch's fused step in the same run; the effective GB/s is set against
this machine's memory bandwidth, measured in the same run. It also compares the bytes of optimizer
state, the compile cost a fresh trial process pays (cold and warm inductor cache, in subprocesses), the
per-step host overhead (the same number of tensors at one element each) and the sweeps' default
digits MLP, where a step is all dispatch. The last lines of the output are greppable summaries.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch._dynamo
import torch._dynamo.utils
import torchvision
from torch import Tensor, nn

from optsweep import optimizers

SEED = 0
DEFAULT_REPEATS = 30
QUICK_REPEATS = 8
WARMUP_STEPS = 3
BANDWIDTH_FLOATS = 64 * 1024 * 1024
BANDWIDTH_TRIALS = 5
SMALL_STEPS_PER_SAMPLE = 20  # a small step takes microseconds: time several per sample
COMPILE_STEADY_STEPS = 10
FALLBACK_CACHE_BYTES = 64 * 1024 * 1024
CACHE_SIZE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
NOISY_SPREAD = 0.25  # IQR/median above which a table gets a noise warning
FUSED = "torch fused"
OURS = "ours default"
Step = Callable[[], Any]


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    torch_class: type[torch.optim.Optimizer]
    ours_class: type[torch.optim.Optimizer]
    hparams: dict[str, float]
    bytes_per_param: int  # memory traffic of one fused fp32 step


SPECS = (
    # Adam, AdamW: read p, g, m, v; write p, m, v.
    OptimizerSpec("adam", torch.optim.Adam, optimizers.Adam, {"lr": 1e-3}, 28),
    OptimizerSpec("adamw", torch.optim.AdamW, optimizers.AdamW, {"lr": 1e-3, "weight_decay": 1e-2}, 28),
    # SGD: read p, g, buf; write p, buf (the L2 term reads p, which is read anyway).
    OptimizerSpec(
        "sgd", torch.optim.SGD, optimizers.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}, 20
    ),
)

# name -> (library, implementation flags)
IMPLEMENTATIONS: dict[str, tuple[str, dict[str, bool]]] = {
    "torch for-loop": ("torch", {"foreach": False}),
    "torch foreach": ("torch", {"foreach": True}),
    FUSED: ("torch", {"fused": True}),
    OURS: ("ours", {}),
    "ours eager": ("ours", {"fused": False}),
}


@dataclass
class Results:
    step_ratio: dict[str, float] = field(default_factory=dict)
    step_paired: dict[str, float] = field(default_factory=dict)
    state_ratio: dict[str, float] = field(default_factory=dict)
    small_ratio: dict[str, float] = field(default_factory=dict)
    noisy_step: set[str] = field(default_factory=set)
    noisy_small: set[str] = field(default_factory=set)
    first_step: dict[str, str] = field(default_factory=dict)  # optimizer -> "13.4 s (cold)"


# ---------------------------------------------------------------- parameters and optimizers


@functools.cache
def resnet18_shapes() -> tuple[torch.Size, ...]:
    return tuple(p.shape for p in torchvision.models.resnet18().parameters())


def digits_mlp_shapes() -> list[torch.Size]:
    """The sweeps' default model: an MLP on 8x8 digits, ~26k parameters."""
    mlp = nn.Sequential(nn.Linear(64, 128), nn.Linear(128, 128), nn.Linear(128, 10))
    return [p.shape for p in mlp.parameters()]


def numel(shapes: Sequence[torch.Size]) -> int:
    return sum(shape.numel() for shape in shapes)


def random_params(shapes: Sequence[torch.Size]) -> list[Tensor]:
    """Parameters with fixed random gradients (seeded); every implementation gets its own clone."""
    generator = torch.Generator().manual_seed(SEED)
    params = []
    for shape in shapes:
        param = torch.randn(shape, generator=generator).requires_grad_(True)
        param.grad = torch.randn(shape, generator=generator)
        params.append(param)
    return params


def clone_params(params: Sequence[Tensor]) -> list[Tensor]:
    clones = []
    for param in params:
        clone = param.detach().clone().requires_grad_(True)
        clone.grad = param.grad.clone()
        clones.append(clone)
    return clones


def build_all(
    spec: OptimizerSpec, implementations: dict[str, tuple[str, dict[str, bool]]], shapes: Sequence[torch.Size]
) -> dict[str, torch.optim.Optimizer]:
    """One optimizer per implementation, each over its own copy of the same parameters and gradients."""
    source = random_params(shapes)
    built = {}
    for name, (library, flags) in implementations.items():
        cls = spec.torch_class if library == "torch" else spec.ours_class
        built[name] = cls(clone_params(source), **spec.hparams, **flags)
    return built


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the storages behind every tensor in `optimizer.state`, each storage counted once."""
    storages: dict[int, int] = {}
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, Tensor):
                storage = value.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


# ---------------------------------------------------------------- timing


def timed(fn: Step, calls: int = 1) -> float:
    """Seconds per call of `calls` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


@contextmanager
def gc_paused() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def interleaved(
    steps: dict[str, Step], repeats: int, calls: int = 1, before_each: Step | None = None
) -> dict[str, list[float]]:
    """Per implementation, `repeats` timings; each repeat runs every implementation once, shuffled."""
    order = list(steps)
    shuffler = random.Random(SEED)
    times: dict[str, list[float]] = {name: [] for name in order}
    with gc_paused():
        for _ in range(repeats):
            shuffler.shuffle(order)
            for name in order:
                if before_each is not None:
                    before_each()
                times[name].append(timed(steps[name], calls))
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(samples) for name, samples in times.items()}


def paired_ratio(samples: list[float], reference: list[float]) -> float:
    """Median over repeats of the ratio within each repeat: robust to a slow phase of the machine."""
    return statistics.median(a / b for a, b in zip(samples, reference, strict=True))


def spread(samples: list[float]) -> float:
    """Interquartile range relative to the median: how noisy a median is."""
    q1, _, q3 = statistics.quantiles(samples, n=4)
    return (q3 - q1) / statistics.median(samples)


def largest_cache_bytes() -> int:
    """The largest CPU cache, from Linux sysfs (a fallback elsewhere)."""
    sizes = [FALLBACK_CACHE_BYTES]
    for size_file in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = size_file.read_text().strip()
        if text[:-1].isdigit() and text[-1] in CACHE_SIZE_UNITS:
            sizes.append(int(text[:-1]) * CACHE_SIZE_UNITS[text[-1]])
    return max(sizes)


class CacheEvictor:
    """Reads a buffer twice the size of the largest CPU cache, so that the next step starts with its
    tensors in DRAM, as it would in training (where forward and backward run between steps). Without
    it the ResNet-18 state (~190 MB for Adam) can partly survive in a large L3 between two steps of the
    same implementation, and how much survives depends on the shuffled order."""

    def __init__(self) -> None:
        self.buffer = torch.ones(2 * largest_cache_bytes() // 4)

    def __call__(self) -> None:
        self.buffer.sum()


# ---------------------------------------------------------------- compile-cache counters

# (counter group, counter) that tell a compile from scratch from one served by the on-disk cache.
CACHE_HITS = (("inductor", "fxgraph_cache_hit"), ("aot_autograd", "autograd_cache_hit"))
CACHE_MISSES = (("inductor", "fxgraph_cache_miss"), ("aot_autograd", "autograd_cache_miss"))


def _count(keys: Sequence[tuple[str, str]]) -> int:
    counters = torch._dynamo.utils.counters
    return sum(counters[group][name] for group, name in keys)


@contextmanager
def compile_counters() -> Iterator[dict[str, int]]:
    """Compile-cache hits and misses (inductor FX graphs, AOTAutograd) during the block."""
    hits, misses = _count(CACHE_HITS), _count(CACHE_MISSES)
    delta: dict[str, int] = {}
    try:
        yield delta
    finally:
        delta["hits"] = _count(CACHE_HITS) - hits
        delta["misses"] = _count(CACHE_MISSES) - misses


def cache_state(delta: dict[str, int]) -> str:
    if delta["misses"]:
        return "cold"
    return "warm" if delta["hits"] else "unused"


def cache_detail(delta: dict[str, int]) -> str:
    return f"{delta['misses']} cache misses, {delta['hits']} hits"


# ---------------------------------------------------------------- memory bandwidth


@dataclass(frozen=True)
class Bandwidth:
    """GB/s over 64M-float arrays (best of a few passes), counting the bytes the kernel asks for.

    `update` (a += s*c, in place) is the one to compare an optimizer step with, which also updates its
    tensors in place. The out-of-place triad and copy write to a destination the CPU reads first
    (write-allocate), so they move a third (triad) or half (copy) more bytes than they are credited.
    """

    triad: float
    copy: float
    update: float


def best_seconds(fn: Step, evict: CacheEvictor) -> float:
    return min(interleaved({"pass": fn}, BANDWIDTH_TRIALS, before_each=evict)["pass"])


def measure_bandwidth(evict: CacheEvictor) -> Bandwidth:
    n = BANDWIDTH_FLOATS
    a, b, c = torch.zeros(n), torch.randn(n), torch.randn(n)
    triad = best_seconds(lambda: torch.add(b, c, alpha=0.5, out=a), evict)
    copy = best_seconds(lambda: a.copy_(b), evict)
    update = best_seconds(lambda: a.add_(c, alpha=0.5), evict)
    size = a.element_size() * n / 1e9
    return Bandwidth(triad=3 * size / triad, copy=2 * size / copy, update=3 * size / update)


class UpdatePass:
    """`a += s*c` over 64M floats: the memory-bound peer timed in each interleaved run of steps, so that
    '% bw' compares figures that met the same noise."""

    name = "in-place a += s*c"

    def __init__(self) -> None:
        self.a = torch.zeros(BANDWIDTH_FLOATS)
        self.c = torch.randn(BANDWIDTH_FLOATS)

    def __call__(self) -> None:
        self.a.add_(self.c, alpha=0.5)

    def gbs(self, seconds: float) -> float:
        return 3 * self.a.nbytes / seconds / 1e9


# ---------------------------------------------------------------- ResNet-18 sections


def warm_up(built: dict[str, torch.optim.Optimizer]) -> tuple[float, dict[str, int]]:
    """A few untimed steps each; returns our default's first step (it compiles) and its cache use."""
    first, delta = 0.0, {"hits": 0, "misses": 0}
    for name, optimizer in built.items():
        with compile_counters() as counted:
            seconds = timed(optimizer.step)
        if name == OURS:
            first, delta = seconds, counted
        timed(optimizer.step, WARMUP_STEPS - 1)
    return first, delta


def print_step_table(
    times: dict[str, list[float]], n_params: int, bytes_per_param: int, reference_gbs: float
) -> dict[str, float]:
    median = medians(times)
    header = ("implementation", "median ms", "IQR/med", "vs fused", "paired", "GB/s", "% bw")
    print("  {:16s} {:>10s} {:>8s} {:>9s} {:>8s} {:>7s} {:>6s}".format(*header))
    for name, seconds in median.items():
        gbs = bytes_per_param * n_params / seconds / 1e9
        print(
            f"  {name:16s} {seconds * 1e3:10.2f} {spread(times[name]):8.2f} "
            f"{seconds / median[FUSED]:8.2f}x {paired_ratio(times[name], times[FUSED]):7.2f}x "
            f"{gbs:7.1f} {100 * gbs / reference_gbs:5.0f}%"
        )
    return median


def warn_if_noisy(times: dict[str, list[float]]) -> bool:
    noisiest = max(spread(samples) for samples in times.values())
    if noisiest > NOISY_SPREAD:
        print(f"  (noisy: an IQR reaches {noisiest:.0%} of its median; rerun when the machine is quieter)")
    return noisiest > NOISY_SPREAD


def print_state_table(built: dict[str, torch.optim.Optimizer]) -> dict[str, int]:
    sizes = {name: state_bytes(optimizer) for name, optimizer in built.items()}
    print(f"  {'implementation':16s} {'state MB':>10s} {'vs fused':>9s}")
    for name, size in sizes.items():
        print(f"  {name:16s} {size / 1e6:10.1f} {size / sizes[FUSED]:8.2f}x")
    return sizes


def resnet18_section(
    spec: OptimizerSpec, repeats: int, peer: UpdatePass, evict: CacheEvictor, results: Results
) -> None:
    shapes = resnet18_shapes()
    n_params = numel(shapes)
    hparams = ", ".join(f"{k}={v:g}" for k, v in spec.hparams.items())
    print(
        f"\n== {spec.name} ({hparams}), ResNet-18 shapes: {len(shapes)} tensors, {n_params / 1e6:.1f}M fp32"
    )
    built = build_all(spec, IMPLEMENTATIONS, shapes)
    first, delta = warm_up(built)
    state = cache_state(delta)
    results.first_step[spec.name] = f"{first:.1f} s ({state})"
    print(
        f"  {OURS} first step (in-process compile): {first:.2f} s, "
        f"inductor cache {state} ({cache_detail(delta)})"
    )
    steps: dict[str, Step] = {name: optimizer.step for name, optimizer in built.items()}
    times = interleaved({**steps, peer.name: peer}, repeats, before_each=evict)
    peer_gbs = peer.gbs(statistics.median(times.pop(peer.name)))
    print(f"  bandwidth peer ({peer.name}, interleaved with the steps): median {peer_gbs:.1f} GB/s = 100% bw")
    median = print_step_table(times, n_params, spec.bytes_per_param, peer_gbs)
    results.step_ratio[spec.name] = median[OURS] / median[FUSED]
    results.step_paired[spec.name] = paired_ratio(times[OURS], times[FUSED])
    if warn_if_noisy(times):
        results.noisy_step.add(spec.name)
    sizes = print_state_table(built)
    results.state_ratio[spec.name] = sizes[OURS] / sizes[FUSED]


# ---------------------------------------------------------------- small-step sections


def small_model_section(spec: OptimizerSpec, repeats: int, results: Results) -> None:
    implementations = {name: v for name, v in IMPLEMENTATIONS.items() if name != "ours eager"}
    built = build_all(spec, implementations, digits_mlp_shapes())
    for optimizer in built.values():
        timed(optimizer.step, WARMUP_STEPS)
    times = interleaved({n: o.step for n, o in built.items()}, repeats, calls=SMALL_STEPS_PER_SAMPLE)
    median = medians(times)
    cells = [
        f"{name} {seconds * 1e6:.0f} us ({seconds / median[FUSED]:.2f}x)" for name, seconds in median.items()
    ]
    print(f"  {spec.name:6s} " + ", ".join(cells))
    results.small_ratio[spec.name] = median[OURS] / median[FUSED]
    if warn_if_noisy(times):
        results.noisy_small.add(spec.name)


def host_overhead_section(repeats: int, evict: CacheEvictor) -> None:
    """ResNet-18's tensor count at one element each: what is left is per-step host work. Warm: steps
    back to back; cold: each after evicting the caches, as the ResNet-18 steps above are timed."""
    shapes = [torch.Size([1])] * len(resnet18_shapes())
    implementations = {
        "torch foreach": ("torch", {"foreach": True}),
        FUSED: ("torch", {"fused": True}),
        "ours compiled": ("ours", {"fused": True}),
        "ours eager": ("ours", {"fused": False}),
    }
    built = build_all(SPECS[0], implementations, shapes)
    # Keep this graph static like the ResNet-18 one: a second set of shapes for the same function
    # would otherwise be compiled with dynamic shapes (other code, other guards).
    with torch._dynamo.config.patch(automatic_dynamic_shapes=False):
        for optimizer in built.values():
            timed(optimizer.step, WARMUP_STEPS)
    steps = {name: optimizer.step for name, optimizer in built.items()}
    warm = medians(interleaved(steps, repeats, calls=SMALL_STEPS_PER_SAMPLE))
    cold = medians(interleaved(steps, repeats, before_each=evict))
    print(f"\n== host overhead of an Adam step: {len(shapes)} tensors of 1 element (ResNet-18's count)")
    print(f"  {'implementation':16s} {'warm us':>8s} {'vs fused':>9s} {'cold us':>8s} {'vs fused':>9s}")
    for name in steps:
        print(
            f"  {name:16s} {warm[name] * 1e6:8.0f} {warm[name] / warm[FUSED]:8.2f}x "
            f"{cold[name] * 1e6:8.0f} {cold[name] / cold[FUSED]:8.2f}x"
        )
    extra_warm, extra_cold = (1e6 * (t["ours compiled"] - t[FUSED]) for t in (warm, cold))
    print(f"  ours compiled spends {extra_warm:.0f} us (warm) / {extra_cold:.0f} us (cold) more per step")


# ---------------------------------------------------------------- compile cost in a fresh process


def measure_compile_child() -> None:
    """Hidden mode: one default optsweep Adam on ResNet-18 shapes in this (fresh) process, then its
    steady step against torch's fused one."""
    built = build_all(
        SPECS[0], {OURS: IMPLEMENTATIONS[OURS], FUSED: IMPLEMENTATIONS[FUSED]}, resnet18_shapes()
    )
    with compile_counters() as delta:
        first = timed(built[OURS].step)
    for optimizer in built.values():
        timed(optimizer.step, WARMUP_STEPS)
    steady = medians(interleaved({name: opt.step for name, opt in built.items()}, COMPILE_STEADY_STEPS))
    print(
        json.dumps(
            {"first_step_s": first, "ours_ms": steady[OURS] * 1e3, "fused_ms": steady[FUSED] * 1e3, **delta}
        )
    )


def compile_in_subprocess(cache_dir: str | None, threads: int) -> dict[str, float]:
    env = dict(os.environ)
    if cache_dir is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    command = [sys.executable, os.path.abspath(__file__), "--measure-compile", "--threads", str(threads)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compile_section(quick: bool, threads: int) -> dict[str, float]:
    """First step of a fresh process: with an empty inductor cache dir, then again with that dir.
    --quick skips the cold run and measures the warm one against this machine's default cache dir,
    which this process has just filled (or found filled)."""
    print("\n== compile cost of the default Adam step in a fresh process (ResNet-18 shapes)")
    cost: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="optsweep-inductor-") as fresh_dir:
        runs = [("warm", None, "default cache dir")]
        if not quick:
            runs = [("cold", fresh_dir, "empty cache dir"), ("warm", fresh_dir, "same dir again")]
        for label, cache_dir, where in runs:
            result = compile_in_subprocess(cache_dir, threads)
            cost[label] = result["first_step_s"]
            print(
                f"  {label:4s}: first step {result['first_step_s']:.1f} s ({where}: {cache_detail(result)}), "
                f"then {result['ours_ms']:.2f} ms per step vs torch fused {result['fused_ms']:.2f} ms "
                f"({result['ours_ms'] / result['fused_ms']:.2f}x, back to back)"
            )
    if quick:
        print("  cold: skipped (--quick)")
    return cost


# ---------------------------------------------------------------- summary


def ratios_line(
    ratios: dict[str, float], paired: dict[str, float] | None = None, noisy: Iterable[str] = ()
) -> str:
    cells = []
    for name, ratio in ratios.items():
        notes = [f"paired {paired[name]:.2f}x"] if paired else []
        notes += ["noisy"] if name in noisy else []
        cells.append(f"{name} ours/fused = {ratio:.2f}x" + (f" ({', '.join(notes)})" if notes else ""))
    return ", ".join(cells)


def print_summary(results: Results, compile_cost: dict[str, float], threads: int) -> None:
    n_params = numel(resnet18_shapes())
    print("\n== summary (goal: ours <= 1.0x torch fused in step time and in state bytes)")
    for name, ratio in results.step_ratio.items():
        met = ratio <= 1.0 and results.state_ratio[name] <= 1.0
        caveat = " (noisy timings: rerun when the machine is quieter)" if name in results.noisy_step else ""
        print(
            f"  {name}: step {ratio:.2f}x (paired {results.step_paired[name]:.2f}x), "
            f"state {results.state_ratio[name]:.2f}x: {'met' if met else 'NOT met'}{caveat}"
        )
    cold = f"{compile_cost['cold']:.1f} s" if "cold" in compile_cost else "skipped"
    first_steps = ", ".join(f"{name} {text}" for name, text in results.first_step.items())
    resnet = f"resnet18, {n_params / 1e6:.1f}M params, {threads} threads"
    step = ratios_line(results.step_ratio, results.step_paired, results.noisy_step)
    small = ratios_line(results.small_ratio, noisy=results.noisy_small)
    print(f"optimizer_step: {step} ({resnet})")
    print(f"optimizer_state: {ratios_line(results.state_ratio)} (resnet18)")
    print(f"optimizer_step_small: {small} (digits MLP, {threads} threads)")
    print(f"compile_in_process: {first_steps} (first step, resnet18)")
    print(f"compile: cold {cold}, warm {compile_cost['warm']:.1f} s (adam, resnet18)")


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, help=f"timed steps per implementation (default {DEFAULT_REPEATS})"
    )
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_REPEATS} repeats, no cold-compile run")
    parser.add_argument("--measure-compile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    if args.repeats < 2:
        parser.error("--repeats must be at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.measure_compile:
        measure_compile_child()
        return
    threads = torch.get_num_threads()
    print(
        f"torch {torch.__version__}, {threads} threads, {args.repeats} repeats, interleaved in random order"
    )
    evict = CacheEvictor()
    bandwidth = measure_bandwidth(evict)
    print(
        f"memory bandwidth, best of {BANDWIDTH_TRIALS}: in-place a += s*c {bandwidth.update:.1f} GB/s, "
        f"triad a = b + s*c {bandwidth.triad:.1f} GB/s, copy {bandwidth.copy:.1f} GB/s"
    )
    peer = UpdatePass()
    print(
        f"each ResNet-18 step is timed after reading {evict.buffer.nbytes >> 20} MiB to evict the CPU caches"
    )
    results = Results()
    for spec in SPECS:
        resnet18_section(spec, args.repeats, peer, evict, results)
    print(
        f"\n== digits MLP ({numel(digits_mlp_shapes()) / 1e3:.0f}k params): median step, ratio vs torch fused"
    )
    for spec in SPECS:
        small_model_section(spec, args.repeats, results)
    host_overhead_section(args.repeats, evict)
    del evict, peer
    compile_cost = compile_section(args.quick, threads)
    print_summary(results, compile_cost, threads)


if __name__ == "__main__":
    main()
