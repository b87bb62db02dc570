"""`tokenskip(ratio=γ)` at inference asks for exactly the prompt TokenSkip's training data used.

A model fine-tuned on `leanthink train compress tokenskip` data learns to follow the line
`Compression ratio: γ` at the end of the user turn; if inference rendered it anywhere else (or with
another number format) the condition would silently not fire. These tests pin that equality.
"""

from __future__ import annotations

import pytest

from leanthink import solve
from leanthink.errors import LeanthinkError
from leanthink.train.dataset import make_example, ratio_suffix
from tests.fakes import ScriptedBackend


@pytest.mark.parametrize("ratio", [0.5, 0.6, 1.0])
def test_inference_prompt_equals_training_prompt(ratio):
    be = ScriptedBackend(lambda p: "2 and 2 make 4. So \\boxed{4}.")
    r = solve("What is 2+2?", backend=be, method=f"tokenskip(ratio={ratio})")
    assert r.answer == "4"
    example = make_example("What is 2+2?", "2 and 2 make 4.", user_suffix=ratio_suffix(ratio))
    trained = be.render_chat(example["prompt"], add_generation_prompt=True)
    assert be.calls[0] == trained
    assert be.calls[0].endswith(f"Compression ratio: {ratio:g}</user><assistant>")


@pytest.mark.parametrize("spec", ["tokenskip(ratio=0)", "tokenskip(ratio=1.5)", "tokenskip(gamma=0.5)"])
def test_bad_ratio_is_a_clear_error(spec):
    be = ScriptedBackend(lambda p: "x")
    with pytest.raises(LeanthinkError):
        solve("q?", backend=be, method=spec)
