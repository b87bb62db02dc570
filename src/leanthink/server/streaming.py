"""Response bodies and SSE chunks for chat and legacy completions.

Reasoning goes to `reasoning_content`, the answer to `content` (chat) or `text`
(completions), the way vLLM and DeepSeek serve reasoning models. In the natural answer
format (the default) `content` is the model's final answer as text (`Result.content`);
in the boxed format, the grading form as the method produced it. Token usage:
* `total_tokens` = `prompt_tokens` + `completion_tokens`, OpenAI's meaning;
  `completion_tokens`: tokens the engine generated for the request (reasoning, answer and
  hidden work such as early-exit probes). This is what `max_completion_tokens` caps.
* `completion_tokens_details.reasoning_tokens`: tokens of the reasoning the user sees.
* `leanthink`: the method's own accounting by phase; `method_tokens` = thinking + answer +
  forced (injected text) + overhead (probes, discarded samples), generated or injected,
  which is what `leanthink bench` compares (`Result.usage.total`). The prompt is not in it.
  With the decisions (`trace`), a client can see why thinking stopped.
"""

from __future__ import annotations

import math
from typing import Any

from ..readable import plain, remainder
from .planning import Plan
from .protocol import SSE_DONE, sse
from .worker import ChoiceOutput


def shown_content(plan: Plan, o: ChoiceOutput) -> str:
    """The answer text a client gets: plain text in the natural format, the grading form in
    the boxed one (and always unchanged for pass-through)."""
    text = o.result.answer_text
    return plain(text) if plan.answer_format == "natural" and not plan.passthrough else text


def openai_finish(out: ChoiceOutput) -> str:
    if out.hit_cap or out.result.finish_reason == "length":
        return "length"
    return "stop"


def usage_body(plan: Plan, outs: list[ChoiceOutput]) -> dict[str, Any]:
    prompt = outs[0].result.usage.prompt if outs else 0
    completion = sum(o.generated for o in outs)
    u = [o.result.usage for o in outs]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "completion_tokens_details": {"reasoning_tokens": sum(x.thinking for x in u)},
        "leanthink": {
            "thinking_tokens": sum(x.thinking for x in u),
            "answer_tokens": sum(x.answer for x in u),
            "forced_tokens": sum(x.forced for x in u),
            "overhead_tokens": sum(x.overhead for x in u),
            "method_tokens": sum(x.total for x in u),
        },
    }


def json_safe(v: Any) -> Any:
    """JSON has no inf/nan (some methods score with -inf): write them as strings; numpy
    scalars become Python numbers."""
    if type(v).__module__ == "numpy" and hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v


def _choice_ext(o: ChoiceOutput) -> dict[str, Any]:
    r = o.result
    return {
        "index": o.index,
        "finish_reason": r.finish_reason,
        "answer": r.answer,
        "overhead_tokens": r.usage.overhead,
        "forced_tokens": r.usage.forced,
        "generated_tokens": o.generated,
        "hit_token_cap": o.hit_cap,
        "trace": json_safe([ev.model_dump() for ev in r.trace]),
    }


def leanthink_ext(plan: Plan, outs: list[ChoiceOutput]) -> dict[str, Any]:
    """The method and its decisions. Top-level fields describe choice 0; `choices` has all."""
    first = outs[0] if outs else None
    ext: dict[str, Any] = {
        "method": plan.method_spec,
        "method_source": plan.source,
        "backend": first.result.backend if first else None,
        "token_cap": plan.cap,
        "emulated_thinking": bool(first and first.result.emulated_thinking),
        "overhead_tokens": sum(o.result.usage.overhead for o in outs),
        "forced_tokens": sum(o.result.usage.forced for o in outs),
    }
    if any(o.approximate_counts for o in outs):
        ext["approximate_token_counts"] = True
    if first is not None:
        c = _choice_ext(first)
        ext.update(finish_reason=c["finish_reason"], answer=c["answer"], trace=c["trace"],
                   latency_s=round(first.result.latency_s, 4))
    if len(outs) > 1:
        ext["choices"] = [_choice_ext(o) for o in outs]
    return ext


def response_body(plan: Plan, outs: list[ChoiceOutput], rid: str, created: int) -> dict[str, Any]:
    choices = []
    for o in outs:
        r = o.result
        content = shown_content(plan, o)
        if plan.endpoint == "chat":
            choices.append({"index": o.index,
                            "message": {"role": "assistant", "content": content,
                                        "reasoning_content": r.reasoning or None},
                            "logprobs": None, "finish_reason": openai_finish(o)})
        else:
            choices.append({"index": o.index, "text": content, "reasoning_content": r.reasoning or None,
                            "logprobs": None, "finish_reason": openai_finish(o)})
    return {
        "id": rid,
        "object": "chat.completion" if plan.endpoint == "chat" else "text_completion",
        "created": created,
        "model": plan.model_name,
        "choices": choices,
        "usage": usage_body(plan, outs),
        "leanthink": leanthink_ext(plan, outs),
    }


class ChunkWriter:
    """Builds the SSE byte chunks of one streamed response."""

    def __init__(self, plan: Plan, rid: str, created: int):
        self.plan = plan
        self.rid = rid
        self.created = created
        self.chat = plan.endpoint == "chat"
        self.started: set[int] = set()
        self.reasoning: dict[int, str] = {}
        self.content: dict[int, str] = {}

    def _chunk(self, choices: list[dict], **extra) -> bytes:
        obj = {"id": self.rid, "object": "chat.completion.chunk" if self.chat else "text_completion",
               "created": self.created, "model": self.plan.model_name, "choices": choices}
        obj.update(extra)
        return sse(obj)

    def _choice(self, i: int, *, reasoning: str | None = None, content: str | None = None,
                finish: str | None = None, role: bool = False) -> dict:
        if self.chat:
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
                delta["content"] = ""
            if reasoning is not None:
                delta["reasoning_content"] = reasoning
            if content is not None:
                delta["content"] = content
            return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
        c: dict[str, Any] = {"index": i, "text": content or "", "logprobs": None, "finish_reason": finish}
        if reasoning is not None:
            c["reasoning_content"] = reasoning
        return c

    def _start(self, i: int) -> list[bytes]:
        if i in self.started:
            return []
        self.started.add(i)
        self.reasoning[i] = self.content[i] = ""
        return [self._chunk([self._choice(i, role=True)])] if self.chat else []

    def delta(self, i: int, channel: str, text: str) -> list[bytes]:
        if not text:
            return []
        out = self._start(i)
        if channel == "reasoning":
            self.reasoning[i] += text
            out.append(self._chunk([self._choice(i, reasoning=text)]))
        else:
            self.content[i] += text
            out.append(self._chunk([self._choice(i, content=text)]))
        return out

    def finish_choice(self, o: ChoiceOutput) -> list[bytes]:
        """Send what the method produced without streaming it (a forced or probed answer, the
        answer of `direct`), then the choice's final chunk."""
        i, r = o.index, o.result
        out = self._start(i)
        if r.reasoning and not self.reasoning[i].strip():
            out += self.delta(i, "reasoning", r.reasoning)
        out += self.delta(i, "content", remainder(shown_content(self.plan, o), self.content[i]))
        out.append(self._chunk([self._choice(i, finish=openai_finish(o))],
                               leanthink=_choice_ext(o) | {"method": self.plan.method_spec}))
        return out

    def usage(self, outs: list[ChoiceOutput]) -> bytes:
        return self._chunk([], usage=usage_body(self.plan, outs), leanthink=leanthink_ext(self.plan, outs))

    @staticmethod
    def error(body: dict) -> list[bytes]:
        from ..models import redact_obj

        return [sse(redact_obj(body)), SSE_DONE]

    @staticmethod
    def done() -> bytes:
        return SSE_DONE
