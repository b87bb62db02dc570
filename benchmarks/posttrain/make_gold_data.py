"""The "gold-solution" SFT set: GSM8K *train* worked solutions as concise chains (C3oT-like, human-written).

    python benchmarks/posttrain/make_gold_data.py ../shared/data/gsm8k_train.jsonl /work/posttrain-runs/data/gold200.jsonl 200

Each row is the training-JSONL contract (leanthink.train.dataset.make_example): the `think` prompt turn,
and as completion the worked solution with GSM8K's <<calc>> annotations removed, then
"The answer is \\boxed{N}." in the qwen2.5 (emulated thinking, no tags) format.
"""

import json
import re
import sys

from leanthink.reasoning import family_for
from leanthink.train.dataset import format_completion, make_example

src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = family_for("qwen2.5-coder-0.5b")
rows = []
with open(src) as f:
    for line in f:
        d = json.loads(line)
        sol, ans = d["answer"].split("####")
        sol, ans = re.sub(r"<<[^>]*>>", "", sol).strip(), ans.strip()
        rows.append(make_example(d["question"], format_completion(fam, sol, f"The answer is \\boxed{{{ans}}}."),
                                 meta={"item_id": f"gsm8k_train/{d['idx']}", "source": "gsm8k_train",
                                       "compressor": "gold-solution", "gold": ans}))
        if len(rows) >= n:
            break
with open(out, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
print(f"{len(rows)} rows -> {out}")
