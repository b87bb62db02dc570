"""A prompt that remembers how its tokens came to be, so that a stream goes on exactly where it stopped.

Why: greedy decoding on llama.cpp and transformers is not batch-invariant. The logits of a
position differ (up to ~0.8 logit on our small models, measured) depending on whether the
tokens before it were evaluated one at a time (as during generation) or as a prompt, and on
how that prompt was split into batches; a near-tie then flips the chain. So "continue from
the prompt plus the text generated so far" is not the same chain: the text may re-tokenize
differently, and evaluated as a prompt it gets different numbers.

A `Continuation` is a `str` (the full text, so wrappers, HTTP engines and anything that does
not know the type treat it as the prompt text, as before) with `parts`:

* a `str` part is prompt text: evaluated as a prompt, its batches starting at the part's start;
* a `tuple` of token ids is text the model generated: evaluated one token at a time, as it
  was when it was generated.

Engines with `exact_continuation = True` (llama.cpp, transformers, the generation cache over
them) evaluate each part that way whatever ran before, so a stream resumed from
`Continuation.of(prompt).generated(ids, text)` gives the tokens the uninterrupted stream of
`prompt` would have given, and a probe branched as `...generated(ids[:k], ...).forced(text)`
is a side branch that leaves the main chain's numbers untouched.
"""

from __future__ import annotations

from typing import Iterable, Union

Part = Union[str, tuple]


class Continuation(str):
    parts: tuple[Part, ...]
    ends: tuple[int, ...]
    """Where each part's text ends in the string."""

    def __new__(cls, text: str, parts: tuple[Part, ...], ends: tuple[int, ...] | None = None):
        self = super().__new__(cls, text)
        self.parts = parts
        self.ends = ends if ends is not None else (len(text),)
        return self

    def __getnewargs__(self):  # pickling (str subclasses are rebuilt through __new__)
        return str(self), self.parts, self.ends

    @classmethod
    def of(cls, prompt: str) -> "Continuation":
        return prompt if isinstance(prompt, Continuation) else cls(prompt, (str(prompt),))

    def generated(self, ids: Iterable[int], text: str) -> "Continuation":
        """This prompt followed by tokens the model generated from it (`text` is their text)."""
        ids = tuple(int(i) for i in ids)
        if not ids:
            return self
        full = str(self) + text
        if isinstance(self.parts[-1], tuple):
            return Continuation(full, self.parts[:-1] + (self.parts[-1] + ids,), self.ends[:-1] + (len(full),))
        return Continuation(full, self.parts + (ids,), self.ends + (len(full),))

    def forced(self, text: str) -> "Continuation":
        """This prompt followed by text we write (an injected marker, a cut remainder)."""
        if not text:
            return self
        full = str(self) + text
        return Continuation(full, self.parts + (text,), self.ends + (len(full),))

    @property
    def tail_ids(self) -> tuple[int, ...]:
        """The generated ids at the end (empty if it ends with text)."""
        return self.parts[-1] if isinstance(self.parts[-1], tuple) else ()

    def base(self) -> str:
        """The prompt whose stream the trailing generated ids continue: a plain `str` when
        that prompt is one text part (so its cache key is the plain prompt's)."""
        if not self.tail_ids:
            return self
        parts, ends = self.parts[:-1], self.ends[:-1]
        if len(parts) == 1:
            return parts[0]
        return Continuation(str(self)[: ends[-1]], parts, ends)

    def key(self) -> str:
        """A string that identifies the parts (for caches); never equal to a plain prompt."""
        import json

        return "\x00continuation:" + json.dumps([list(p) if isinstance(p, tuple) else p for p in self.parts], ensure_ascii=False)


def then(prompt: str, text: str) -> str:
    """`prompt + text`, keeping a Continuation's parts (the text is forced)."""
    return prompt.forced(text) if isinstance(prompt, Continuation) else prompt + text
