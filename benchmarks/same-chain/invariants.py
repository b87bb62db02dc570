"""Same prompt, same chain, measured on a real model (issue 13, section 1).

For each of the first N GSM8K dev items, runs `think` and three methods whose exit is disabled or
whose cap never fires (`budget(max_thinking=CAP)`, `deer(threshold=1.01)`, `dynasor(agree=10)`; their
probes still run) in one process, one after another, and compares the token ids of each method's
main chain with `think`'s. A probe is a side branch, so all four must be identical.

    python benchmarks/same-chain/invariants.py --model "qwen2.5-coder-1.5b?threads=1" --items 20
    python benchmarks/same-chain/invariants.py --model qwen2.5-coder-0.5b --engine transformers --items 20

Prints one line per item and a summary line; `--out FILE` appends the summary as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.test_same_chain import Recorder, _chains, _first_diff  # noqa: E402  (the tests' own recorder)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b?threads=1")
    ap.add_argument("--engine", choices=["llamacpp", "transformers"], default="llamacpp")
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--skip", type=int, default=0, help="start after the first SKIP items (extend an earlier run)")
    ap.add_argument("--cap", type=int, default=4000)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out")
    a = ap.parse_args()

    with open(Path(a.data_dir) / "gsm8k_dev.jsonl") as f:
        questions = [json.loads(line)["question"] for _, line in zip(range(a.skip + a.items), f)][a.skip:]
    if a.engine == "transformers":
        from leanthink.backends.transformers_backend import TransformersBackend
        from leanthink.models import PRESETS, ensure_preset_file

        name = a.model.partition("?")[0]  # a preset: transformers dequantises its GGUF (cached after the first load)
        real = TransformersBackend(str(ensure_preset_file(PRESETS[name])), threads=1, model_id=name)
    else:
        from leanthink.backends import load_backend

        real = load_backend(a.model)
    be = Recorder(real)
    cap = a.cap
    methods = [f"think(max_thinking={cap})", f"budget(max_thinking={cap})",
               f"deer(threshold=1.01,max_thinking={cap})", f"dynasor(agree=10,max_thinking={cap})"]
    same = {m: 0 for m in methods[1:]}
    t0 = time.time()
    for i, q in enumerate(questions):
        chains = _chains(be, q, methods)
        ref = chains[methods[0]]
        notes = []
        for m in methods[1:]:
            if chains[m] == ref:
                same[m] += 1
            else:
                notes.append(f"{m.split('(')[0]} differs at token {_first_diff(chains[m], ref)}")
        print(f"item {a.skip + i}: think {len(ref)} tokens; " + ("; ".join(notes) or "all identical"), flush=True)
    summary = {"model": a.model, "engine": a.engine, "items": len(questions), "first_item": a.skip, "cap": cap,
               "identical": {m.split("(")[0]: same[m] for m in methods[1:]}, "seconds": round(time.time() - t0)}
    print(json.dumps(summary))
    if a.out:
        with open(a.out, "a") as f:
            f.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
