"""fp32 against fp16, int8 and 4-bit weights for a larger decoder LM, on each format's runtime.

The model: compress.zoo.lm's TinyGPT at dim 512, 8 layers, 8 heads, context 64, vocabulary 64
(the shipped text's 50 symbols, padded so 4-bit blocks of 32 divide every layer): 25 M parameters.

1. One `compress run` makes and checks everything: it trains the model from scratch on the shipped
   text for --steps steps, exports it to ONNX, OpenVINO IR and TFLite, makes int8 (dynamic), fp16
   and int4_weights (groups of 32) of each (`quantize.precision: [int8, fp16, int4_weights]`), and
   measures perplexity on held-out text, next-token agreement with torch, parity, and latency of
   one 64-token window through the agent in a separate process.
2. Then each artifact generates --new tokens greedily after a --prompt-token prompt taken from the
   held-out text, each in a process of its own, with the runtime's plain generation loop: these
   exports have no KV cache, so every new token runs the fixed 64-token window again, right-padded
   (the model is causal: what follows the last token changes nothing before it). Torch's own
   greedy generation is the reference the generated tokens are compared with, token by token.

No peer runs here: neither OpenVINO GenAI nor onnxruntime-genai is installed in this environment,
and both need a decoder exported with its KV cache, which compress does not make yet. So the
generation figures are the plain loop's, for every precision alike.

    python benchmarks/decoder_precisions.py [--steps 150] [--prompt 32] [--new 32] [--repeats 3]
        [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")

CONTEXT = 64
RUNTIME_OF = {"torch": "torch", "onnx": "onnxruntime", "openvino": "openvino", "tflite": "litert"}


def recipe(steps: int) -> dict[str, Any]:
    return {
        "schema_version": 1, "name": "decoder-precisions", "seed": 0,
        "model": {"factory": "compress.zoo.lm:tiny_gpt",
                  "kwargs": {"vocab_size": 64, "context": CONTEXT, "dim": 512, "layers": 8, "heads": 8},
                  "input": {"name": "input_ids", "shape": [1, CONTEXT], "dtype": "int64"},
                  "train": {"epochs": 1, "max_steps": steps, "lr": 0.0006, "batch_size": 32}},
        "data": {"source": "text", "batch_size": 32, "calibration_fraction": 0.05, "test_fraction": 0.05},
        "task": {"kind": "language_model", "metric": "perplexity"},
        "stages": [],
        "quantize": {"precision": ["int8", "fp16", "int4_weights"], "mode": "dynamic", "int4": {"group_size": 32}},
        "export": ["onnx", "openvino", "tflite"],
        "verify": {"runtimes": ["torch", "onnxruntime", "openvino", "litert"], "targets": ["local"],
                   "latency": {"warmup": 3, "min_runs": 20, "min_seconds": 0.5, "threads": [1]}},
    }


def generate(runtime: str, path: str, prompt: list[int], new: int, repeats: int) -> dict[str, Any]:
    """Greedy generation with the plain loop, in this process (the child's): the timed runs, median."""
    import numpy as np

    from compress.runtimes.agent import load_backend

    backend = load_backend(runtime, path, 1)
    specs = backend.input_specs()  # a torch artifact declares none: the recipe's own input
    name, dtype = (specs[0][0], specs[0][2]) if specs else ("input_ids", "int64")
    window = np.zeros((1, CONTEXT), dtype=dtype)

    def next_token(ids: list[int]) -> int:
        window[0, :] = 0
        window[0, :len(ids)] = ids
        logits = backend.run({name: window})[0]
        return int(np.argmax(logits[0, len(ids) - 1]))

    next_token(prompt)  # warm-up: first-run allocations are no token's cost
    first_token_s, rates, tokens = [], [], []
    for _ in range(repeats):
        ids = list(prompt)
        started = time.perf_counter()
        ids.append(next_token(ids))
        first = time.perf_counter() - started
        while len(ids) < len(prompt) + new:
            ids.append(next_token(ids))
        rest = time.perf_counter() - started - first
        first_token_s.append(first)
        rates.append((new - 1) / rest if rest > 0 else float("nan"))
        tokens = ids[len(prompt):]
    return {"ttft_ms": 1000 * statistics.median(first_token_s), "tokens_per_s": statistics.median(rates),
            "tokens": tokens}


def generate_in_a_process(runtime: str, path: Path, prompt: list[int], new: int, repeats: int) -> dict[str, Any]:
    child = subprocess.run([sys.executable, __file__, "--child", runtime, str(path), json.dumps(prompt), str(new),
                            str(repeats)], capture_output=True, text=True, timeout=1800)
    if child.returncode != 0:
        return {"error": (child.stderr.strip().splitlines() or ["failed"])[-1][:150]}
    return json.loads(child.stdout.strip().splitlines()[-1])


def cpu_flags() -> str:
    wanted = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "avx_vnni", "fma"}
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in flags.split(":", 1)[1].split() if f in wanted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps (batches of 32 windows)")
    parser.add_argument("--prompt", type=int, default=32, help="prompt tokens")
    parser.add_argument("--new", type=int, default=32, help="new tokens (prompt + new <= 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed generations per artifact (median)")
    parser.add_argument("--out", type=Path, default=None, help="keep the run here (default: a temporary folder)")
    args = parser.parse_args()
    if args.prompt + args.new > CONTEXT or args.prompt < 1 or args.new < 2:
        parser.error(f"need prompt >= 1, new >= 2 and prompt + new <= {CONTEXT}")

    import yaml

    from compress.data.text import default_corpus, encode

    out = args.out or Path(tempfile.mkdtemp(prefix="decoder-precisions-"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe(args.steps), sort_keys=False))
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "compress.cli", "run", str(out / "recipe.yaml"), "--out",
                          str(out / "runs")], capture_output=True, text=True)
    printed = [line for line in run.stdout.splitlines() if line.startswith("results: ")]
    if not printed:
        print(run.stdout[-3000:], run.stderr[-3000:], file=sys.stderr)
        return 1
    folder = Path(printed[0].removeprefix("results: ")).parent
    results = json.loads((folder / "results.json").read_text())
    print(f"compress run: exit {run.returncode} in {time.perf_counter() - started:.0f} s; {folder}", file=sys.stderr)

    held_out = encode(default_corpus())
    start = int(len(held_out) * 0.97)  # inside the test part (the last 5% of the text)
    prompt = [int(t) for t in held_out[start:start + args.prompt]]
    original = next(a for a in results["artifacts"] if a["format"] == "torch")
    rows = []
    reference = generate_in_a_process("torch", folder / original["path"], prompt, args.new, args.repeats)
    for artifact in [original, *[a for a in results["artifacts"] if a["format"] != "torch"]]:
        runtime = RUNTIME_OF[artifact["format"]]
        measured = next((m for m in results["measurements"] if m["artifact"] == artifact["name"]
                         and m["runtime"] == runtime), None)
        generated = reference if artifact is original else generate_in_a_process(
            runtime, folder / artifact["path"], prompt, args.new, args.repeats)
        rows.append((artifact, runtime, measured, generated))
        print(f"  generated with {artifact['name']} on {runtime}", file=sys.stderr, flush=True)

    fp32 = {a["format"]: a["name"] for a in results["artifacts"] if a["precision"] == "fp32"}

    def perplexity(name: str, runtime: str) -> float | None:
        m = next((m for m in results["measurements"] if m["artifact"] == name and m["runtime"] == runtime), None)
        return m["metric"].get("perplexity") if m and m["status"] == "ok" else None

    print(f"\nTinyGPT {original['params'] / 1e6:.1f} M parameters, trained {args.steps} steps; prompt {args.prompt} "
          f"tokens, {args.new} new, greedy, plain loop (no KV cache), 1 thread, median of {args.repeats}\n")
    header = (f"{'artifact':34} {'runtime':12} {'precision':13} {'size MB':>8} {'ppl':>7} {'d ppl':>7} "
              f"{'agree':>6} {'gen=torch':>9} {'TTFT ms':>8} {'tok/s':>7} {'p50 ms':>8}")
    print(header)
    print("-" * len(header))
    for artifact, runtime, measured, generated in rows:
        ppl = perplexity(artifact["name"], runtime)
        base = perplexity(fp32.get(artifact["format"], original["name"]), runtime)
        change = f"{ppl - base:+.3f}" if ppl is not None and base is not None else "-"
        agree = f"{measured['agreement']:.3f}" if measured and measured.get("agreement") is not None else "-"
        if "error" in generated:
            same, ttft, rate = "-", "-", generated["error"][:40]
        else:
            same = f"{sum(a == b for a, b in zip(generated['tokens'], reference.get('tokens', []), strict=False))}/" \
                   f"{args.new}"
            ttft, rate = f"{generated['ttft_ms']:.1f}", f"{generated['tokens_per_s']:.1f}"
        p50 = f"{measured['latency']['p50_ms']:.2f}" if measured and measured.get("latency") else "-"
        print(f"{artifact['name']:34} {runtime:12} {artifact['precision']:13} {artifact['size_bytes'] / 1e6:8.2f} "
              f"{(f'{ppl:.3f}' if ppl is not None else '-'):>7} {change:>7} {agree:>6} {same:>9} {ttft:>8} "
              f"{rate:>7} {p50:>8}")
    for refusal in results.get("refusals", []):
        print(f"refused: {refusal['format']} at {refusal['stage']}: {refusal['reason'][:150]}")
    print(f"\n{platform.processor() or platform.machine()}; CPU flags: {cpu_flags()}; python "
          f"{platform.python_version()}; run folder {folder}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, runtime, path, prompt, new, repeats = sys.argv
        print(json.dumps(generate(runtime, path, json.loads(prompt), int(new), int(repeats))))
        sys.exit(0)
    sys.exit(main())
