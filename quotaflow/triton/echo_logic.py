"""The ``echo`` model: a cheap, deterministic stand-in for a text model.

It answers at once with ``n`` tokens, where ``n = min(max_tokens, completion_tokens)`` when the
request sends the optional ``completion_tokens`` input, else ``n = min(max_tokens,
prompt_tokens)`` (it "echoes" as many tokens as the prompt had). Its ``prompt_tokens`` is the
same exact count that :func:`quotaflow.tokens.estimate` gives.

The text is a sequence of words from :data:`WORDS`, each ONE SmolLM2 token with its leading
space, chosen by a hash of the rendered prompt; so the same input always gives the same text, and
the text re-tokenizes to exactly ``n`` tokens. Each execute call (one dynamic batch) sleeps
``batch_cost_ms`` once, like a GPU kernel launch that costs the same for 1 or 32 rows.
"""

from __future__ import annotations

import hashlib
from typing import Final

import numpy as np

from quotaflow.tokens import ModelTokenizer
from quotaflow.triton.protocol import Completion, GenerationRequest

# 64 common words; " " + word is a single token of SmolLM2's vocabulary (tests check it).
_WORDS_TEXT: Final = """
the of and to in is that for it as was with be by on not he this are or his from at which but
have an they you were her she there one all we their has been would more when if will about so
time no other can them some into only its new like two what first after could also most
"""
WORDS: Final = tuple(" " + w for w in _WORDS_TEXT.split())
_WORDS_ARRAY: Final = np.array(WORDS, dtype=np.object_)


def echo_text(rendered: str, n: int) -> str:
    """``n`` words picked deterministically from a hash of ``rendered``."""
    if n <= 0:
        return ""
    digest = hashlib.blake2b(rendered.encode("utf-8"), digest_size=8).digest()
    seed = int.from_bytes(digest[:4], "little")
    step = int.from_bytes(digest[4:], "little") | 1  # odd: visits every word before repeating
    idx = (seed + np.arange(n, dtype=np.int64) * step) % len(WORDS)
    return "".join(_WORDS_ARRAY[idx])


def echo_completion(request: GenerationRequest, tokenizer: ModelTokenizer) -> Completion:
    prompt_tokens = tokenizer.count(request.rendered)
    wanted = prompt_tokens if request.completion_tokens is None else request.completion_tokens
    n = min(request.max_tokens, wanted)
    return Completion(
        text=echo_text(request.rendered, n), prompt_tokens=prompt_tokens, completion_tokens=n
    )
