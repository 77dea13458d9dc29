"""Run every model family's recipe and write docs/model-families.md from their results.json.

For each family x format x precision (the final compressed model, plus the original in torch):
the task metric, agreement with the original, the int8 change against its fp32 parent, size and p50
latency, per runtime; then what each run refused or skipped, and how long it took. Nothing in the
table is typed by hand.

    python benchmarks/model_families.py                 # runs all recipes (about 15 min here)
    python benchmarks/model_families.py --reuse         # tabulate the latest finished runs
    python benchmarks/model_families.py --recipes recipes/gpt-tiny.yaml
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = {  # recipe -> what it shows
    "recipes/quickstart.yaml": "CNN (digits)",
    "recipes/mobilenet-digits.yaml": "CNN, MobileNetV2-style (digits)",
    "recipes/lstm-digits.yaml": "LSTM, 2 layers (digits rows)",
    "recipes/minilm-embed.yaml": "Transformer encoder: MiniLM-L6 embeddings",
    "recipes/minilm-topics.yaml": "Transformer encoder: MiniLM-L6 + topic head",
    "recipes/gpt-tiny.yaml": "GPT-style decoder LM (characters)",
}
CLASSIFIER_BUDGET = 0.01  # int8 within one point of top-1 of its fp32 parent


def latest_run(runs: Path, name: str) -> Path | None:
    found = sorted(p for p in (runs / name).glob("2*") if p.is_dir() and not p.name.endswith(".failed"))
    return found[-1] if found else None


def run_recipe(recipe: Path, runs: Path) -> tuple[float, int]:
    started = time.perf_counter()
    log = runs / f"{recipe.stem}.log"
    runs.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        code = subprocess.call([sys.executable, "-m", "compress.cli", "run", str(recipe), "--out", str(runs)],
                               stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
    return time.perf_counter() - started, code


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def family_rows(results: dict) -> tuple[list[list[str]], list[str]]:
    metric = results["task"]["metric"]
    artifacts = {a["name"]: a for a in results["artifacts"]}
    by_id = {a["id"]: a for a in results["artifacts"]}
    final = [a for a in results["artifacts"] if a["format"] == "torch"][-1]["name"]
    wanted = {"original", final} | {a["name"] for a in results["artifacts"]
                                    if a["format"] != "torch" and a["name"].startswith(final + ".")}
    scores = {(m["artifact"], m["runtime"]): m for m in results["measurements"] if m["status"] == "ok"}
    rows, notes = [], []
    for m in results["measurements"]:
        if m["artifact"] not in wanted or m["threads"] != results["measurements"][0]["threads"]:
            continue
        artifact = artifacts[m["artifact"]]
        value = m["metric"].get(metric)
        delta = ""
        if artifact["precision"] == "int8" and artifact.get("parent"):
            parent = scores.get((by_id[artifact["parent"]]["name"], m["runtime"]))
            if parent is not None and value is not None and metric in parent["metric"]:
                change = value - parent["metric"][metric]
                delta = f"{change:+.4f}"
                if metric == "top1" and change < -CLASSIFIER_BUDGET - 1e-9:
                    notes.append(f"{m['artifact']} on {m['runtime']}: top-1 {change * 100:+.2f} points against "
                                 "fp32, more than one point")
        lat = m.get("latency") or {}
        rows.append([m["artifact"], artifact["format"], artifact["precision"], m["runtime"],
                     _fmt(value), _fmt(m.get("agreement")), delta or "-",
                     _fmt((m.get("parity") or {}).get("cosine")),
                     f"{artifact['size_bytes'] / 1e6:.3f}", _fmt(lat.get("p50_ms"), 3) if lat else m["status"]])
    for refusal in results.get("refusals", []):
        notes.append(f"refused: {refusal['stage']} of {refusal['artifact']}"
                     f"{' (op ' + refusal['op'] + ')' if refusal.get('op') else ''}: {refusal['reason'][:400]}")
    for stage in results.get("stages", []):
        skipped = (artifacts.get(stage.get("artifact", "")) or {}).get("info", {}).get("skipped")
        if skipped:
            notes.append(f"{stage['name']} skipped: {skipped}")
    for name, artifact in artifacts.items():
        if name in wanted and artifact["precision"] == "int8":
            info = artifact.get("info", {})
            kept = ", kept in float: " + ", ".join(info["nodes_excluded"]) if info.get("nodes_excluded") else ""
            notes.append(f"{name}: {info.get('quantizer', '?')}, mode {info.get('mode', 'static')}{kept}")
    return rows, notes


def render(sections: list[tuple[str, str, dict, float | None]]) -> str:
    device = next((m["device"] for _, _, r, _ in sections for m in r["measurements"] if m.get("device")), {})
    lines = ["# Model families: measured", "",
             f"Generated by `python benchmarks/model_families.py` on {device.get('cpu', platform.machine())} "
             f"({platform.machine()}), Python {platform.python_version()}; "
             "latency is batch 1, one thread, p50 over the agent's timed runs. Not typed by hand.", "",
             "Columns: the task metric on the held-out test split; agreement with the original model "
             "(top-1 per sample, per token for the LM, mean cosine for embeddings); the int8 change of the "
             "metric against its fp32 parent on the same runtime; parity cosine against the torch model "
             "the artifact was made from; size; p50 latency.", ""]
    for recipe, family, results, seconds in sections:
        metric = results["task"]["metric"]
        took = f", `compress run {recipe}` took {seconds:.0f} s" if seconds else ""
        lines += [f"## {family}", "", f"Recipe `{recipe}`, run {results['run_id']}{took}.", "",
                  f"| artifact | format | precision | runtime | {metric} | agreement | int8 vs fp32 | parity cos "
                  "| size MB | p50 ms |", "|---|---|---|---|---|---|---|---|---|---|"]
        rows, notes = family_rows(results)
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        if notes:
            lines += [""] + [f"- {note}" for note in notes]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="*", default=list(FAMILIES))
    parser.add_argument("--runs", type=Path, default=Path("/tmp/compress-families"))
    parser.add_argument("--reuse", action="store_true", help="tabulate the latest finished run of each recipe")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "model-families.md")
    args = parser.parse_args()
    sections = []
    for recipe in args.recipes:
        path = ROOT / recipe
        name = next(line.split(":", 1)[1].strip() for line in path.read_text().splitlines()
                    if line.startswith("name:"))
        seconds = None
        if not args.reuse:
            seconds, code = run_recipe(path, args.runs)
            print(f"{recipe}: exit {code} in {seconds:.0f} s", flush=True)
        folder = latest_run(args.runs, name)
        if folder is None:
            print(f"{recipe}: no finished run under {args.runs}", file=sys.stderr)
            continue
        results = json.loads((folder / "results.json").read_text())
        if seconds is None:  # a reused run: its own start and finish times
            from datetime import datetime

            seconds = (datetime.fromisoformat(results["finished"]) - datetime.fromisoformat(results["started"])
                       ).total_seconds()
        sections.append((recipe, FAMILIES.get(recipe, recipe), results, seconds))
    args.out.write_text(render(sections))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
