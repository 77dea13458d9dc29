"""Streaming memory: a data set of >= 2 GiB of decoded images through calibration and evaluation, with
the process's peak RSS held under a bound (1.5 GB by default), measured, not assumed.

What it does, in one process:

1. generates a folder of JPEG images (one subfolder per class; 180x180 blocks of seeded noise tinted
   with the class's colour), enough that the decoded float32 [3, 160, 160] samples fill `--gib` GiB;
2. loads it with the `image_folder` source (`compress.data.images`): the images are decoded one at a
   time into a memory-mapped .npy cache file (under `$COMPRESS_CACHE_DIR`, set to a scratch folder),
   and the train / calibration / test splits are slices of that map;
3. `check_against_input` on every split (shape, dtype, finiteness, in chunks);
4. trains a small CNN (3 convolutions, global pool, linear; seeded) on `--train-samples` samples of
   the train split (every k-th row: the rows are in folder order, class after class), batch by
   batch, so that top-1 agreement between fp32 and int8 means something;
5. exports it to fp32 ONNX (`compress.formats.export`) and calibrates static int8 on the calibration
   split (`compress.formats.quantize("onnx", ...)`, `QuantizeConfig` with `--calibration` samples);
6. streams every split (the whole data set) through the fp32 and the int8 model with ONNX Runtime,
   batch by batch (`compress.data.batches`), and the test split through the torch model
   (`compress.verify.reference_outputs`);
7. `Splits.fingerprint()` over every split. It runs last only so that the cumulative peak after each
   phase above shows whether calibration and evaluation alone stay under the bound.

It prints, per phase: seconds, the bytes of samples the phase reads (or writes), MB/s, the
process's peak RSS so far (`getrusage(RUSAGE_SELF).ru_maxrss`: the kernel's exact high-water mark of
anonymous + file-backed + shared resident pages), and, sampled every `--interval` seconds during the
phase, the peak VmRSS, RssAnon and RssFile of /proc/self/status; then the data set's size, top-1
agreement of int8 with fp32 (and accuracy against the labels), the machine and its CPU flags. It exits
1 when the peak RSS (ru_maxrss, the whole run) exceeds `--max-rss-gb` (decimal GB: 1.5 = 1.5e9
bytes), 0 otherwise.

What is bounded, exactly. Pages of the memory-mapped cache that the process has read (or written)
count in its RSS (RssFile) while they stay mapped. They are page cache the kernel reclaims when memory
is short, but on a machine with free memory it leaves them resident, so with nothing done a pass over
2 GiB leaves ~2 GiB in RssFile, whatever the code holds. This script stands in for that memory
pressure: every `--interval` seconds a monitor thread calls madvise(MADV_PAGEOUT) on the mappings of
files under the scratch cache folder (found in /proc/self/maps), which unmaps and reclaims the pages
the process has touched (it cannot destroy data: dirty pages stay in the page cache, and anonymous
memory is at most swapped). So the bound checked is on the whole RSS (anonymous + file-backed), with
file-backed pages held at most about one interval's worth of reading; anonymous memory (RssAnon: the
arrays, copies and buffers the code allocates) is not touched and is what the code must keep
bounded. The monitor is a Python thread: while one C call holds the GIL over a large read (numpy's
`tobytes` of a big chunk, say), it cannot run, and the pages read meanwhile stay counted until it
does (a kernel reclaiming under pressure would not wait). The RssAnon and RssFile columns show which
of the two made a phase's peak. `--no-release` turns the monitor's madvise off, to show the RSS that
file-backed pages reach when nothing reclaims them (RssAnon should not change).

    python benchmarks/streaming_memory.py [--gib 2.0 | --quick] [--keep] [--max-rss-gb 1.5]
        [--batch-size 64] [--calibration 256] [--train-samples 1024] [--interval 0.02] [--no-release]
        [--tmp /tmp]

`--quick` is `--gib 0.1` (about a minute); `--keep` keeps the generated images under
`<tmp>/compress-streaming-memory/` and reuses them on the next run (the decoded cache is always
rebuilt, in a scratch folder removed at the end, so the decode is always measured). A 2 GiB run takes
a few minutes on 2 cores and needs ~2.3 GB of free disk under `--tmp`.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLASSES = 10
CHANNELS, SIZE = 3, 160  # the model input: float32 [3, 160, 160] samples
GENERATED = 180  # the images' side; image_folder resizes the shorter side to it (a no-op) and crops 160
BLOCKS = 12  # the noise's resolution before it is scaled up to GENERATED
SAMPLE_BYTES = CHANNELS * SIZE * SIZE * 4
MADV_PAGEOUT = 21  # Linux >= 5.4 (<linux/mman.h>); Python's mmap module may lack the constant
STATUS_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")
MB = 1e6


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- measuring -----------------------------------------------------------------------------------

def read_status() -> dict[str, int]:
    """The memory fields of /proc/self/status, in bytes."""
    values: dict[str, int] = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in STATUS_FIELDS:
                values[key] = int(rest.split()[0]) * 1024  # kB
    return values


def peak_rss() -> int:
    """The process's peak resident set so far, in bytes (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Phase:
    name: str
    streamed: int = 0  # bytes of samples the phase reads or writes
    seconds: float = 0.0
    peaks: dict[str, int] = field(default_factory=dict)  # sampled maxima of STATUS_FIELDS
    maxrss: int = 0  # ru_maxrss at the end of the phase
    end: dict[str, int] = field(default_factory=dict)
    note: str = ""

    def sample(self, status: dict[str, int]) -> None:
        for key, value in status.items():
            self.peaks[key] = max(self.peaks.get(key, 0), value)


class Monitor(threading.Thread):
    """Samples /proc/self/status every `interval` seconds into the current phase and, unless told
    not to, reclaims the pages of mappings of files under `release_under` (madvise MADV_PAGEOUT)."""

    def __init__(self, interval: float, release_under: Path | None) -> None:
        super().__init__(name="memory-monitor", daemon=True)
        self.interval = interval
        self.prefix = str(release_under.resolve()) + os.sep if release_under is not None else None
        self.phases: list[Phase] = []
        self.current: Phase | None = None
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.samples = 0
        self.released_calls = 0
        self.release_errors: dict[int, int] = {}  # errno -> count
        self.failure: str | None = None  # an exception that stopped the monitor: its figures are then incomplete
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self._libc.madvise.restype = ctypes.c_int

    def run(self) -> None:
        try:
            while not self.stopping.wait(self.interval):
                self.tick()
        except Exception as exc:  # reported, and the run fails: its peaks would be wrong
            self.failure = f"{type(exc).__name__}: {exc}"

    def tick(self) -> None:
        status = read_status()  # before releasing: the peak is what was resident
        with self.lock:
            if self.current is not None:
                self.current.sample(status)
            self.samples += 1
        if self.prefix is not None:
            self.release()

    def release(self) -> None:
        assert self.prefix is not None
        ranges = []
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].startswith(self.prefix):
                    start, end = (int(v, 16) for v in parts[0].split("-"))
                    ranges.append((start, end - start))
        for start, length in ranges:
            self.released_calls += 1
            if self._libc.madvise(start, length, MADV_PAGEOUT) != 0:
                error = ctypes.get_errno()
                self.release_errors[error] = self.release_errors.get(error, 0) + 1

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join()

    @contextmanager
    def phase(self, name: str, streamed: int = 0) -> Iterator[Phase]:
        record = Phase(name, streamed)
        record.sample(read_status())
        log(f"{name} ...")
        with self.lock:
            self.current = record
        started = time.perf_counter()
        try:
            yield record
        finally:
            record.seconds = time.perf_counter() - started
            record.end = read_status()
            record.sample(record.end)
            record.maxrss = peak_rss()
            with self.lock:
                self.current = None
            self.phases.append(record)
            anon, file_backed = record.peaks.get("RssAnon", 0), record.peaks.get("RssFile", 0)
            log(f"{name}: {record.seconds:.1f} s, peak RSS so far {record.maxrss / MB:,.0f} MB, sampled peak "
                f"RssAnon {anon / MB:,.0f} MB, RssFile {file_backed / MB:,.0f} MB")


# --- the data set --------------------------------------------------------------------------------

def generate(folder: Path, count: int, seed: int = 0) -> int:
    """`count` JPEGs in `folder`/class_XX/ (image i in class i % CLASSES); reused when a complete set
    with the same parameters is there. Returns how many were written."""
    import numpy as np
    from PIL import Image

    stamp = folder / ".complete"
    expected = f"{count} {GENERATED} {BLOCKS} {CLASSES} {seed}"
    if stamp.is_file() and stamp.read_text() == expected:
        return 0
    if folder.exists():
        shutil.rmtree(folder)
    palette = np.random.default_rng(seed).integers(0, 256, size=(CLASSES, 3)).astype(np.float32)
    for label in range(CLASSES):
        (folder / f"class_{label:02d}").mkdir(parents=True)
    for index in range(count):
        label = index % CLASSES
        rng = np.random.default_rng((seed, index))
        noise = rng.integers(0, 256, size=(BLOCKS, BLOCKS, 3)).astype(np.float32)
        pixels = (0.5 * noise + 0.5 * palette[label]).astype(np.uint8)
        image = Image.fromarray(pixels).resize((GENERATED, GENERATED), Image.Resampling.BILINEAR)
        image.save(folder / f"class_{label:02d}" / f"{index:06d}.jpg", quality=90)
    stamp.write_text(expected)
    return count


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*.jpg"))


# --- the model -----------------------------------------------------------------------------------

def small_cnn() -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)

    def block(inp: int, out: int) -> list[nn.Module]:
        return [nn.Conv2d(inp, out, 3, stride=2, padding=1), nn.ReLU()]

    return nn.Sequential(*block(CHANNELS, 16), *block(16, 32), *block(32, 64), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(64, CLASSES))


def train(model: Any, split: Any, batch_size: int, epochs: int = 2) -> None:
    import torch

    from compress.data import batches

    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for epoch in range(epochs):
        for batch in batches(split, batch_size, shuffle=True, seed=epoch):
            x, y = torch.from_numpy(batch.x), torch.from_numpy(batch.y)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    model.eval()


def stream(path: Path, splits: Any, batch_size: int, threads: int) -> dict[str, Any]:
    """Logits of every sample of every split, from an ONNX Runtime session, batch by batch."""
    import numpy as np
    import onnxruntime as ort

    from compress.data import batches

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = {}
    for split_name in ("train", "calibration", "test"):
        parts = [session.run(None, {name: batch.x})[0]
                 for batch in batches(getattr(splits, split_name), batch_size)]
        outputs[split_name] = np.concatenate(parts)
    return outputs


# --- the report ----------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        line = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"
    return line.split(":", 1)[1].strip()


def cpu_flags_line() -> str:
    try:
        return next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "flags: unknown"


def cpu_flags() -> str:
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")
    found = [f for f in cpu_flags_line().split(":", 1)[-1].split() if f in wanted]
    return " ".join(found) or "none of " + ",".join(wanted)


def memory_total() -> int:
    try:
        line = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration, ValueError):
        return 0


def mb(value: int | None) -> str:
    return "-" if not value else f"{value / MB:,.0f}"


def report(monitor: Monitor, args: argparse.Namespace, facts: dict[str, Any], started: float) -> bool:
    """Print the figures; True when the peak RSS is within the bound."""
    bound = int(args.max_rss_gb * 1e9)
    peak = peak_rss()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print()
    print(f"Machine: {cpu_model()} ({platform.machine()}), {os.cpu_count()} CPUs, "
          f"{memory_total() / 2**30:.1f} GiB RAM, Linux {platform.release()}; Python {platform.python_version()}, "
          f"{facts.get('versions', '')}")
    print(f"CPU flags: {cpu_flags()}")
    print(f"/proc/cpuinfo {cpu_flags_line()}")
    print(f"Data set: {facts['images']:,} images ({facts['jpeg_bytes'] / MB:,.0f} MB of JPEG) decoded to "
          f"{facts['dataset_bytes']:,} bytes = {facts['dataset_bytes'] / 1e9:.3f} GB = "
          f"{facts['dataset_bytes'] / 2**30:.3f} GiB of float32 [{CHANNELS}, {SIZE}, {SIZE}] samples "
          f"(cache file {facts['cache_bytes']:,} bytes, memory-mapped: {facts['memmapped']}); splits "
          f"train {facts['splits']['train']:,} / calibration {facts['splits']['calibration']:,} / "
          f"test {facts['splits']['test']:,}")
    print(f"Release of file-backed pages: {'off (--no-release)' if args.no_release else 'madvise(MADV_PAGEOUT)'}"
          f" every {args.interval} s; {monitor.samples:,} samples, {monitor.released_calls:,} madvise calls"
          + (f", failures by errno {monitor.release_errors}" if monitor.release_errors else "")
          + f" (one sample every {(time.perf_counter() - started) / max(monitor.samples, 1):.3f} s on average)")
    print(f"Batch size {args.batch_size}, calibration samples {facts.get('calibration_samples', '-')}, "
          f"{facts.get('threads', '-')} threads; {time.perf_counter() - started:.0f} s in all")
    print()
    print("| phase | s | samples read MB | MB/s | peak RSS so far MB (ru_maxrss) | phase peak VmRSS MB | "
          "phase peak RssAnon MB | phase peak RssFile MB | VmRSS at end MB | notes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for phase in monitor.phases:
        rate = f"{phase.streamed / MB / phase.seconds:,.0f}" if phase.streamed and phase.seconds > 0 else "-"
        print(f"| {phase.name} | {phase.seconds:.1f} | {mb(phase.streamed)} | {rate} | {mb(phase.maxrss)} | "
              f"{mb(phase.peaks.get('VmRSS'))} | {mb(phase.peaks.get('RssAnon'))} | "
              f"{mb(phase.peaks.get('RssFile'))} | {mb(phase.end.get('VmRSS'))} | {phase.note} |")
    print()
    if "agreement" in facts:
        print(f"int8 vs fp32 ONNX, every sample ({facts['samples']:,}): top-1 agreement {facts['agreement']:.4f}; "
              f"accuracy against the labels fp32 {facts['fp32_accuracy']:.4f}, int8 {facts['int8_accuracy']:.4f}")
        print(f"fp32 ONNX vs torch on the test split: top-1 agreement {facts['torch_agreement']:.4f}, "
              f"max |logit difference| {facts['torch_max_diff']:.2e}")
    within = peak <= bound
    anon = max(p.peaks.get("RssAnon", 0) for p in monitor.phases)
    print(f"Peak RSS (ru_maxrss, whole run): {peak:,} bytes = {peak / 1e9:.3f} GB; bound {bound / 1e9:.3f} GB: "
          f"{'PASS' if within else 'FAIL'}. Highest sampled RssAnon {anon / 1e9:.3f} GB. "
          f"Child processes' peak RSS {children / 1e9:.3f} GB.")
    if facts["dataset_bytes"] < 2 * 2**30:
        print(f"Note: the data set is {facts['dataset_bytes'] / 2**30:.2f} GiB, under the 2 GiB of the goal "
              "(--quick or a small --gib).")
    if monitor.failure:
        print(f"FAIL: the memory monitor stopped ({monitor.failure}); the sampled figures are incomplete")
    return within and not monitor.failure


# --- the run -------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=2.0, help="decoded data set size, GiB (default 2.0)")
    parser.add_argument("--quick", action="store_true", help="a 0.1 GiB data set, for a fast check")
    parser.add_argument("--keep", action="store_true", help="keep the generated images in <tmp> and reuse them")
    parser.add_argument("--max-rss-gb", type=float, default=1.5, help="bound on the peak RSS, decimal GB")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--calibration", type=int, default=256, help="calibration samples (QuantizeConfig)")
    parser.add_argument("--train-samples", type=int, default=1024)
    parser.add_argument("--interval", type=float, default=0.02, help="monitor period, seconds")
    parser.add_argument("--no-release", action="store_true", help="leave file-backed pages mapped")
    parser.add_argument("--tmp", default="/tmp", help="where the images and the decoded cache go")
    args = parser.parse_args()
    gib = 0.1 if args.quick else args.gib
    count = max(3 * CLASSES, math.ceil(gib * 2**30 / SAMPLE_BYTES))

    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="compress-streaming-memory-", dir=args.tmp))
    images = (Path(args.tmp) / "compress-streaming-memory" / f"images-{count}" if args.keep else scratch / "images")
    cache = scratch / "cache"
    cache.mkdir()
    os.environ["COMPRESS_CACHE_DIR"] = str(cache)  # image_folder writes its decoded cache under it
    monitor = Monitor(args.interval, None if args.no_release else cache)
    monitor.start()
    facts: dict[str, Any] = {}
    try:
        with monitor.phase("generate JPEGs") as phase:
            written = generate(images, count)
            phase.note = f"{written:,} written" if written else "reused (--keep)"
        facts["images"], facts["jpeg_bytes"] = count, folder_bytes(images)

        with monitor.phase("import torch, onnxruntime, compress"):
            import numpy as np
            import onnxruntime
            import torch

            from compress import formats
            from compress.contracts import DataContext
            from compress.data import check_against_input
            from compress.data.images import image_folder
            from compress.recipe import DataConfig, ImagesConfig, InputSpec, QuantizeConfig
            from compress.verify import reference_outputs
        threads = len(os.sched_getaffinity(0))
        torch.set_num_threads(threads)
        facts["threads"] = threads
        facts["versions"] = f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__}"

        dataset_bytes = count * SAMPLE_BYTES
        with monitor.phase("decode (image_folder)", dataset_bytes):
            config = DataConfig(source="image_folder", path=str(images), images=ImagesConfig(resize=GENERATED),
                                batch_size=args.batch_size)
            shape = [1, CHANNELS, SIZE, SIZE]
            ctx = DataContext(file="benchmarks/streaming_memory.py", folder=images.parent, input_shape=shape,
                              input_dtype="float32", allowed=[], inputs=[("input", shape, "float32")])
            splits = image_folder(config, ctx)
        with monitor.phase("check_against_input", dataset_bytes):
            splits = check_against_input(splits, [InputSpec(name="input", shape=shape)], file=ctx.file)
        arrays = [splits.train.x, splits.calibration.x, splits.test.x]
        facts["dataset_bytes"] = sum(a.nbytes for a in arrays)
        facts["cache_bytes"] = sum(p.stat().st_size for p in cache.rglob("*.npy"))
        facts["memmapped"] = "yes" if all(isinstance(a, np.memmap) for a in arrays) else "NO: " + ", ".join(
            type(a).__name__ for a in arrays)
        facts["splits"] = {name: len(getattr(splits, name)) for name in ("train", "calibration", "test")}

        model = small_cnn()
        # rows are in folder order (class after class): every k-th row, so that every class is seen
        train_split = splits.train.take(slice(None, None, max(1, len(splits.train) // args.train_samples)))
        train_split = train_split.head(min(args.train_samples, len(train_split)))
        with monitor.phase(f"train small CNN ({len(train_split):,} samples x 2 epochs)", 2 * train_split.x.nbytes):
            train(model, train_split, args.batch_size)

        with monitor.phase("export fp32 ONNX"):
            example = torch.from_numpy(np.array(splits.test.x[:2]))
            fp32 = formats.export("onnx", model, example, scratch / "fp32", input_names=["input"]).path

        calibration = min(args.calibration, len(splits.calibration))
        facts["calibration_samples"] = calibration
        with monitor.phase("calibrate static int8 ONNX (formats.quantize)", calibration * SAMPLE_BYTES) as phase:
            quantized = formats.quantize("onnx", fp32, model, scratch / "int8",
                                         QuantizeConfig(calibration={"samples": args.calibration}),
                                         splits.calibration.inputs, input_names=["input"])
            int8 = quantized.path
            phase.note = f"mode {quantized.info.get('mode')}, {quantized.info.get('calibration_samples')} samples"

        with monitor.phase("evaluate fp32 ONNX, every split", dataset_bytes):
            fp32_out = stream(fp32, splits, args.batch_size, threads)
        with monitor.phase("evaluate int8 ONNX, every split", dataset_bytes):
            int8_out = stream(int8, splits, args.batch_size, threads)
        with monitor.phase("reference_outputs (torch), test split", splits.test.x.nbytes):
            torch_test = reference_outputs(model, splits.test.inputs, batch_size=args.batch_size)

        with monitor.phase("Splits.fingerprint", dataset_bytes) as phase:
            phase.note = f"sha256 {splits.fingerprint()}"

        names = ("train", "calibration", "test")
        fp32_top = np.concatenate([fp32_out[n].argmax(1) for n in names])
        int8_top = np.concatenate([int8_out[n].argmax(1) for n in names])
        labels = np.concatenate([getattr(splits, n).y for n in names])
        facts.update(samples=len(labels), agreement=float((fp32_top == int8_top).mean()),
                     fp32_accuracy=float((fp32_top == labels).mean()), int8_accuracy=float((int8_top == labels).mean()),
                     torch_agreement=float((fp32_out["test"].argmax(1) == torch_test.argmax(1)).mean()),
                     torch_max_diff=float(np.abs(fp32_out["test"] - torch_test).max()))
        monitor.stop()
        del splits, arrays, train_split, fp32_out, int8_out  # close the memory map before its folder goes
        return 0 if report(monitor, args, facts, started) else 1
    finally:
        monitor.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
