"""Post-training for concise reasoning (issue 15): collect -> compress -> SFT / RL -> export.

Import-light on purpose: `leanthink solve` imports the CLI, which registers the `train`
sub-app, so nothing here may pull in torch, trl, peft or datasets at import time. The
heavy modules (`sft`, `rl`, `export`) import them inside their functions, through
`leanthink.errors.require`, so a missing extra is one line naming `pip install -e ".[train]"`.

Stages and their modules:
  * collect (`collect.py`) and compress (`compress/`): chains -> prompt/completion JSONL
  * `sft.py`: TRL `SFTTrainer` + peft LoRA, completion-only loss, optional O1-Pruner weights
  * `rl.py` + `rewards.py`: TRL `GRPOTrainer` with grader-based, length-aware rewards
  * `export.py`: merge LoRA, save HF, convert to GGUF with llama.cpp's own converter
"""

from __future__ import annotations

TRAIN_EXTRA = "train"
"""The pip extra holding trl, peft, datasets, accelerate (and the transformers backend)."""
