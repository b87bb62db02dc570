"""Dynamic early exit: stop thinking once a trial answer is confident (DEER) or stable (Dynasor).

Both branch a short trial answer from the current reasoning prefix: end thinking, add the
answer prefix, read the boxed answer greedily. A probe is a side branch (`Chain.probe`): it
starts from the chain's exact token ids, whose KV cache the engine reuses, so it costs its own
few tokens, and the chain resumes from those ids as if it had not been probed (with exit
disabled, `deer(threshold=1.01)` and `dynasor(agree=10)` produce `think`'s chain token for
token). Every probe is counted as overhead; the probe that triggers the exit becomes the
answer (its tokens move to forced + answer).
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import BaseModel, Field

from ..result import Result
from .base import Method, Task, register
from .engine import Chain, ChainOutput, Decision, Exit, Pause, ThinkState, build_prompt, to_result

DEFAULT_CUES = ("Wait", "Alternatively", "\n\n")


class DeerParams(BaseModel):
    threshold: float = Field(0.95, gt=0, le=1.01, description="Exit when the trial answer's confidence reaches this (1.01: never exit, probes still run).")
    confidence: Literal["mean", "geometric"] = Field("mean", description="Mean token probability or geometric mean (= exp mean logprob).")
    cues: str = Field("Wait|Alternatively|\\n\\n", min_length=1, description="Transition points that trigger a probe, separated by |. `\\n\\n` = paragraph break.")
    min_tokens: int = Field(0, ge=0, description="No probe before this many thinking tokens.")
    max_thinking: int = Field(4096, gt=0, description="Safety cap on thinking tokens.")
    max_probes: int = Field(32, ge=1, description="Stop probing after this many trials.")


def _cue_list(spec: str) -> list[str]:
    return [c.replace("\\n", "\n") for c in spec.split("|") if c]


@register
class Deer(Method):
    name = "deer"
    summary = "DEER: at reasoning transitions (Wait, Alternatively, paragraph breaks) branch a trial answer; exit when its token confidence passes the threshold."
    reference = "Yang et al. 2025, Dynamic Early Exit in Reasoning Models"
    Params = DeerParams
    needs = frozenset({"logprobs", "prefix_continuation"})
    budget_param: ClassVar[str] = "max_thinking"

    def run(self, task: Task) -> Result:
        p = self.params
        prompt = build_prompt(task)
        chain = Chain(task)
        out = ChainOutput()
        cues = _cue_list(p.cues)
        words = [c for c in cues if c.strip()]
        breaks = [c for c in cues if not c.strip()]
        state = {"probes": 0, "checked_len": 0}

        def controller(s: ThinkState) -> Decision | None:
            if s.n_tokens < p.min_tokens or state["probes"] >= p.max_probes:
                return None
            text = s.reasoning
            if not s.paused:  # cheap check while streaming; probe only after the stream is paused
                return Pause() if _find_cut(text, words, breaks, state["checked_len"]) is not None else None
            cut = _find_cut(text, words, breaks, state["checked_len"])
            state["checked_len"] = len(text)
            if cut is None:
                return None
            state["probes"] += 1
            probe = chain.probe(prompt, text[:cut])
            out.overhead_tokens += probe.tokens
            conf = probe.mean_prob if p.confidence == "mean" else probe.geo_prob
            if probe.closed and probe.answer is not None and conf >= p.threshold:
                return Exit(reasoning=text[:cut], answer=probe,
                            detail={"confidence": round(conf, 4), "probes": state["probes"], "answer": probe.answer})
            return None

        out = chain.run(prompt, max_thinking=p.max_thinking, controller=controller, out=out)
        res = to_result(task, self, out, prompt=prompt)
        res.trace.append(_probe_summary(state["probes"], out))
        return res


def _find_cut(text: str, words: list[str], breaks: list[str], checked: int) -> int | None:
    """Where to branch a trial answer: before a cue word that just started, or at a fresh
    paragraph break. None if nothing new since the last probe."""
    if len(text) <= checked:
        return None
    for w in words:
        i = text.rfind(w, checked)
        if i != -1 and text[i:].strip() == w and text[:i].strip():
            return i
    if any(text.endswith(b) for b in breaks) and text.strip():
        return len(text)
    return None


def _probe_summary(n: int, out: ChainOutput):
    from ..result import TraceEvent

    return TraceEvent(event="probes", detail={"n": n, "overhead_tokens": out.overhead_tokens, "exited": out.finish_reason == "exit"})


HEDGES = ("wait", "hmm", "not sure", "maybe", "perhaps", "double-check", "let me check", "recheck", "?")


class DynasorParams(BaseModel):
    interval: int = Field(64, ge=4, description="Probe every K thinking tokens.")
    agree: int = Field(3, ge=2, le=10, description="Exit when the last N probe answers are identical.")
    max_thinking: int = Field(4096, gt=0, description="Safety cap on thinking tokens.")
    hedges: str = Field("|".join(HEDGES), description="Words that make a probe uncertain, separated by |.")


@register
class Dynasor(Method):
    name = "dynasor"
    summary = "Dynasor-CoT: probe an answer every K tokens; exit when the last N probes agree and none hedges."
    reference = "Fu et al. 2025, Efficiently Serving LLM Reasoning Programs with Certaindex (Dynasor)"
    Params = DynasorParams
    needs = frozenset({"prefix_continuation"})
    budget_param: ClassVar[str] = "max_thinking"

    def run(self, task: Task) -> Result:
        p = self.params
        prompt = build_prompt(task)
        chain = Chain(task)
        out = ChainOutput()
        hedges = [h.lower() for h in p.hedges.split("|") if h]
        state = {"next": p.interval, "answers": [], "probes": 0}

        def controller(s: ThinkState) -> Decision | None:
            if s.n_tokens < state["next"]:
                return None
            if not s.paused:
                return Pause()
            state["next"] = s.n_tokens + p.interval
            state["probes"] += 1
            probe = chain.probe(prompt, s.reasoning)
            out.overhead_tokens += probe.tokens
            certain = probe.closed and probe.answer is not None and not any(h in probe.text.lower() for h in hedges)
            state["answers"].append(_norm(probe.answer) if certain else None)
            last = state["answers"][-p.agree:]
            if len(last) == p.agree and last[0] is not None and all(a == last[0] for a in last):
                return Exit(answer=probe, detail={"probes": state["probes"], "answer": probe.answer, "agreeing": p.agree})
            return None

        out = chain.run(prompt, max_thinking=p.max_thinking, controller=controller, out=out)
        res = to_result(task, self, out, prompt=prompt)
        res.trace.append(_probe_summary(state["probes"], out))
        return res


def _norm(ans: str | None) -> str | None:
    return None if ans is None else re.sub(r"\s+", "", ans).rstrip(".")
