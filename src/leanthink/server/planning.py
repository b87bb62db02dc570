"""Turn an OpenAI request into a plan: which method, which question, which caps.

Method selection, first match wins:
1. `leanthink.method` in the body (what the openai client's `extra_body` sends);
2. a method prefix on the model name: `deer/qwen2.5-coder-1.5b`, `chain-of-draft+deer/...`
   (the part before the first `/` when the rest is a served model name; served names may
   themselves contain `/`, so an exact served name is never split);
3. `reasoning_effort` (low/medium/high..., mapped by the server config);
4. the server's default method (`think`).
`leanthink.answer_format` (`natural`, the server's default unless `--answer-format boxed`,
or `boxed`) chooses what `content` holds: the model's own final answer as text, or the
grading form (`\\boxed{40}`). Other keys of the `leanthink` object are parameters of the
(last) method. Parameters that name another model or a probe (`small_model`, `probe`) must
be names the operator registered (`--extra-model`, `--probe`): anything else is a 400 that
neither echoes the value nor looks it up anywhere (no file, no network).

`max_completion_tokens`/`max_tokens` is a hard cap on the tokens the engine generates for a
choice (thinking, answer and probes together): the method's thinking budget is lowered to
leave room for the answer, and the backend wrapper stops generation at the cap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import CapabilityError, ConfigError
from ..methods import Method, get_method
from ..methods.engine import FORCED_ANSWER_TOKENS
from .config import PASSTHROUGH, ServerConfig, check_resources
from .protocol import ApiError, ChatRequest, CompletionRequest, from_leanthink_error

#: Room kept for the (forced) answer when the cap lowers a thinking budget.
ANSWER_RESERVE = FORCED_ANSWER_TOKENS + 8
#: The same in the natural form, where the model writes a sentence, not just `\boxed{N}`.
NATURAL_ANSWER_RESERVE = 96


@dataclass
class Plan:
    endpoint: str
    """`chat` or `completions`."""
    model_name: str
    """The model name echoed in responses (as the client sent it)."""
    method: Method | None
    """None for pass-through."""
    method_label: str
    """Bounded-cardinality name for metrics: `deer`, `chain-of-draft+deer`, `passthrough`."""
    method_spec: str
    source: str
    """Where the method came from: body, model, reasoning_effort, default."""
    question: str = ""
    system: str = ""
    messages: list[dict[str, str]] = field(default_factory=list)
    prompt: str = ""
    cap: int = 0
    n: int = 1
    seed: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    body: dict[str, Any] = field(default_factory=dict)
    """The raw request body (pass-through relays it)."""
    answer_format: str = "natural"
    """`natural`: `content` is the model's final answer as text; `boxed`: the grading form."""

    @property
    def passthrough(self) -> bool:
        return self.method is None

    @property
    def live(self) -> bool:
        """Stream text as it is produced? Only one-chain methods: several chains (sampling,
        collaboration) would interleave; their chosen reasoning and answer are sent at the end."""
        if self.method is None:
            return True
        return self.method.one_chain


def served_names(config: ServerConfig, backend) -> set[str]:
    from ..models import PRESETS, parse_model_string, redact

    names = {config.model, getattr(backend, "model_id", "") or ""}
    if config.served_model_name:
        names.add(config.served_model_name)
    try:
        spec = parse_model_string(config.model)
        if spec.kind == "preset":
            p = PRESETS[spec.target]
            names |= {p.name, *p.aliases}
        names.add(spec.target)
        if spec.served_name:
            names.add(spec.served_name)
    except ConfigError:
        pass
    return {n for n in names if n and redact(n) == n}  # a name that carries a secret is no name to list


def _try_method(spec: str) -> bool:
    try:
        get_method(spec)
        return True
    except ConfigError:
        return False


def split_model(model: str, served: set[str]) -> str | None:
    """Return the method spec encoded in the model name, or None for a plain served name."""
    model = (model or "").strip()
    if not model or model in served:
        return None
    if "/" in model:
        prefix, rest = model.split("/", 1)
        if rest in served:
            try:
                get_method(prefix) if prefix != PASSTHROUGH else None
            except ConfigError as exc:
                raise ApiError(400, f"model '{model}': {exc}", param="model", code="unknown_method") from None
            return prefix
        if prefix == PASSTHROUGH or _try_method(prefix):
            raise ApiError(404, f"model '{rest}' is not served here; served: {', '.join(sorted(served))}",
                           param="model", code="model_not_found")
    elif model == PASSTHROUGH or _try_method(model):
        return model  # a bare method name: the served model with that method
    raise ApiError(404, f"model '{model}' is not served here; use one of {', '.join(sorted(served))} "
                        "(optionally prefixed by a method: deer/NAME)", param="model", code="model_not_found")


def _content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for p in content:
        if p.get("type") != "text" or not isinstance(p.get("text"), str):
            raise ApiError(400, f"{where}: only text content parts are supported, got type '{p.get('type')}'",
                           param="messages", code="unsupported_content")
        parts.append(p["text"])
    return "".join(parts)


def messages_to_question(messages: list) -> tuple[str, str, list[dict[str, str]]]:
    """(question, system text, plain messages). Earlier turns become a transcript in the
    question, because methods prompt the model with one question (plus the answer instruction)."""
    if not messages:
        raise ApiError(400, "messages must contain at least one message", param="messages", code="empty_messages")
    system, turns, plain = [], [], []
    for i, m in enumerate(messages):
        role = m.role
        text = _content_text(m.content, f"messages[{i}]")
        if role in ("system", "developer"):
            system.append(text)
        elif role in ("user", "assistant"):
            turns.append((role, text))
        else:
            raise ApiError(400, f"messages[{i}]: role '{role}' is not supported (system, developer, user, assistant)",
                           param=f"messages[{i}].role", code="unsupported_role")
        plain.append({"role": "system" if role == "developer" else role, "content": text})
    if not turns or turns[-1][0] != "user":
        raise ApiError(400, "the last message must be from the user", param="messages", code="last_not_user")
    question = turns[-1][1]
    if not question.strip():
        raise ApiError(400, "the last user message is empty", param="messages", code="empty_question")
    if len(turns) > 1:
        history = "\n\n".join(f"{'User' if r == 'user' else 'Assistant'}: {t}" for r, t in turns[:-1])
        question = f"Earlier conversation:\n\n{history}\n\nCurrent question: {question}"
    return question, "\n\n".join(s for s in system if s.strip()), plain


def apply_cap(method: Method, cap: int, reserve: int = ANSWER_RESERVE) -> Method:
    """Lower the method's thinking budget / answer caps so its plan fits in `cap` tokens,
    keeping `reserve` tokens (at most half the cap) for the answer."""
    target = method.budget_target()
    fields = type(target).Params.model_fields
    changes: dict[str, Any] = {}
    bp = target.budget_param
    thinking_cap = max(1, cap - min(reserve, cap // 2))
    if bp and bp in fields and getattr(target.params, bp) > thinking_cap:
        changes[bp] = thinking_cap
    for name in ("max_answer", "max_solution"):
        if name in fields and getattr(target.params, name) > cap:
            changes[name] = cap
    if not changes:
        return method
    try:
        return method.with_target_params(**changes)
    except ConfigError as exc:
        raise ApiError(400, f"{exc} (caps lowered to {changes} to fit the token limit {cap})",
                       param="max_completion_tokens", code="invalid_parameter") from None


def check_registered(method: Method, config: ServerConfig) -> None:
    """400 unless every model/probe the method names was registered by the operator."""
    for r in method.resources():
        try:
            check_resources([r], config)
        except ConfigError as exc:
            raise ApiError(400, str(exc), param=f"leanthink.{r.param}",
                           code="unknown_extra_model" if r.kind == "model" else "unknown_probe") from None


def _method_label(m: Method | None) -> str:
    if m is None:
        return PASSTHROUGH
    return m.name


def build_plan(req: ChatRequest | CompletionRequest, config: ServerConfig, backend, endpoint: str,
               raw: dict[str, Any] | None = None) -> Plan:
    """Check a request and decide what to run: the method (or pass-through), its caps and
    sampling settings, and the question. Every client mistake is an `ApiError` (4xx)."""
    _refuse_unsupported(req)
    body_opts = dict(req.leanthink or {})
    spec, source = _method_spec(req, config, backend, body_opts)
    answer_format, params = _answer_format_and_params(body_opts, config)
    method = _make_method(spec, source, params, config, backend)
    limits = _limits(req, config, method)
    if method is not None:
        method = apply_cap(method, limits["cap"], NATURAL_ANSWER_RESERVE if answer_format == "natural" else ANSWER_RESERVE)
    plan = Plan(
        endpoint=endpoint, model_name=req.model, method=method, method_label=_method_label(method),
        method_spec=method.spec if method is not None else PASSTHROUGH, source=source, **limits,
        seed=0 if req.seed is None else int(req.seed),
        stream=bool(req.stream), include_usage=bool(req.stream_options and req.stream_options.include_usage),
        body=dict(raw) if raw is not None else req.model_dump(exclude_none=True), answer_format=answer_format,
    )
    _set_input(plan, req)
    return plan


def _refuse_unsupported(req: ChatRequest | CompletionRequest) -> None:
    """Unsupported OpenAI features: refused (400) rather than silently ignored."""
    if isinstance(req, ChatRequest):
        for name in ("tools", "functions"):
            if getattr(req, name):
                raise ApiError(400, f"'{name}' is not supported by leanthink serve", param=name, code="unsupported_parameter")
        rf = req.response_format
        if rf and not (isinstance(rf, dict) and rf.get("type") == "text"):
            raise ApiError(400, "response_format other than text is not supported", param="response_format",
                           code="unsupported_parameter")
        return
    if req.echo:
        raise ApiError(400, "'echo' is not supported", param="echo", code="unsupported_parameter")
    if req.suffix:
        raise ApiError(400, "'suffix' is not supported", param="suffix", code="unsupported_parameter")
    if req.best_of not in (None, 1):
        raise ApiError(400, "'best_of' is not supported", param="best_of", code="unsupported_parameter")


def _method_spec(req: ChatRequest | CompletionRequest, config: ServerConfig, backend,
                 body_opts: dict[str, Any]) -> tuple[str, str]:
    """(method spec, where it came from), first match wins: body, model prefix,
    reasoning_effort, the server's default (see the module docstring). Pops `method`."""
    effort = None
    if req.reasoning_effort is not None:
        effort = str(req.reasoning_effort).lower()
        if effort not in config.reasoning_effort:
            raise ApiError(400, f"reasoning_effort must be one of {', '.join(config.reasoning_effort)}, got "
                                f"'{req.reasoning_effort}'", param="reasoning_effort", code="invalid_value")
    prefix = split_model(req.model, served_names(config, backend))
    if "method" in body_opts:
        spec = body_opts.pop("method")
        if not isinstance(spec, str) or not spec.strip():
            raise ApiError(400, "leanthink.method must be a non-empty string", param="leanthink.method")
        return spec, "body"
    if prefix:
        return prefix, "model"
    if effort is not None:
        return config.reasoning_effort[effort], "reasoning_effort"
    return config.default_method, "default"


def _answer_format_and_params(body_opts: dict[str, Any], config: ServerConfig) -> tuple[str, dict[str, Any]]:
    """`leanthink.answer_format`, and the method parameters: `leanthink.params` plus the
    object's other keys."""
    answer_format = body_opts.pop("answer_format", config.answer_format)
    if answer_format not in ("natural", "boxed"):
        raise ApiError(400, f"leanthink.answer_format must be 'natural' or 'boxed', got {str(answer_format)[:40]!r}",
                       param="leanthink.answer_format", code="invalid_value")
    params = body_opts.pop("params", None) or {}
    if not isinstance(params, dict):
        raise ApiError(400, "leanthink.params must be an object", param="leanthink.params")
    return answer_format, {**params, **body_opts}


def _make_method(spec: str, source: str, params: dict[str, Any], config: ServerConfig, backend) -> Method | None:
    """The method (None: pass-through), checked against the registered extras and the backend."""
    if spec.strip() == PASSTHROUGH:
        if params:
            raise ApiError(400, f"pass-through takes no method parameters, got {', '.join(params)}",
                           param="leanthink", code="invalid_parameter")
        return None
    try:
        method = get_method(spec, **params)
    except ConfigError as exc:
        unknown = "unknown method" in str(exc)
        param = "leanthink.method" if source == "body" else ("model" if source == "model" else "leanthink")
        if params and not unknown:
            param = "leanthink"
        raise ApiError(400, str(exc), param=param, code="unknown_method" if unknown else "invalid_parameter") from None
    check_registered(method, config)
    try:
        method.check(backend)
    except CapabilityError as exc:  # the backend cannot run this method
        raise from_leanthink_error(exc, param="model") from None
    return method


def _limits(req: ChatRequest | CompletionRequest, config: ServerConfig, method: Method | None) -> dict[str, Any]:
    """n, the token cap, temperature, top_p and stop, each checked against the server's limits."""
    n = 1 if req.n is None else req.n
    if not 1 <= n <= config.max_n:
        raise ApiError(400, f"n must be between 1 and {config.max_n} on this server, got {n}", param="n", code="invalid_value")
    cap_field, cap = "max_tokens", req.max_tokens
    if isinstance(req, ChatRequest) and req.max_completion_tokens is not None:
        cap, cap_field = req.max_completion_tokens, "max_completion_tokens"
    if cap is None:
        cap = config.max_tokens_limit
    elif not 1 <= cap <= config.max_tokens_limit:
        raise ApiError(400, f"{cap_field} must be between 1 and {config.max_tokens_limit} on this server, got {cap}",
                       param=cap_field, code="invalid_value")
    temperature = 0.0 if req.temperature is None else float(req.temperature)
    if not 0 <= temperature <= 2:
        raise ApiError(400, f"temperature must be between 0 and 2, got {temperature}", param="temperature", code="invalid_value")
    top_p = 1.0 if req.top_p is None else float(req.top_p)
    if not 0 < top_p <= 1:
        raise ApiError(400, f"top_p must be in (0, 1], got {top_p}", param="top_p", code="invalid_value")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if stop and method is not None:
        raise ApiError(400, "'stop' is only supported in pass-through mode (methods decide where reasoning and answer end)",
                       param="stop", code="unsupported_parameter")
    if req.logprobs and not (isinstance(req.logprobs, int) and not isinstance(req.logprobs, bool) and req.logprobs == 0):
        raise ApiError(400, "logprobs are not supported by leanthink serve", param="logprobs", code="unsupported_parameter")
    return {"n": n, "cap": cap, "temperature": temperature, "top_p": top_p, "stop": stop}


def _set_input(plan: Plan, req: ChatRequest | CompletionRequest) -> None:
    """The question (and system text, messages) a chat request carries, or the raw prompt."""
    if isinstance(req, ChatRequest):
        plan.question, plan.system, plan.messages = messages_to_question(req.messages)
        return
    prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
    if len(prompts) != 1:
        raise ApiError(400, "prompt must be one string (batches are not supported)", param="prompt", code="unsupported_parameter")
    if not prompts[0].strip():
        raise ApiError(400, "prompt is empty", param="prompt", code="empty_question")
    plan.prompt = plan.question = prompts[0]
