"""quotaflow.triton.echo_logic: the deterministic stand-in model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quotaflow.tokens import ModelTokenizer, estimate, render_input, smollm2_tokenizer
from quotaflow.triton.echo_logic import WORDS, echo_completion, echo_text
from quotaflow.triton.protocol import GenerationRequest


@pytest.fixture(scope="module")
def tok() -> ModelTokenizer:
    return smollm2_tokenizer()


def test_every_word_is_one_token(tok: ModelTokenizer) -> None:
    assert len(set(WORDS)) == len(WORDS) == 64
    assert [w for w in WORDS if tok.count(w) != 1] == []


def test_text_is_deterministic_and_depends_on_the_input() -> None:
    assert echo_text("a prompt", 12) == echo_text("a prompt", 12)
    assert echo_text("a prompt", 12) != echo_text("another prompt", 12)
    assert echo_text("a prompt", 30).startswith(echo_text("a prompt", 12))
    assert echo_text("a prompt", 0) == ""


@settings(max_examples=60, deadline=None)
@given(
    prompt=st.text(max_size=100),
    max_tokens=st.integers(1, 300),
    requested=st.none() | st.integers(0, 300),
)
def test_completion_size_and_text(
    tok: ModelTokenizer, prompt: str, max_tokens: int, requested: int | None
) -> None:
    req = GenerationRequest(
        rendered=render_input(prompt, None), max_tokens=max_tokens, completion_tokens=requested
    )
    c = echo_completion(req, tok)
    e = estimate("echo", prompt, None, max_tokens)
    assert c.prompt_tokens == e.prompt_tokens
    wanted = e.prompt_tokens if requested is None else requested
    assert c.completion_tokens == min(max_tokens, wanted) <= max_tokens
    assert tok.count(c.text) == c.completion_tokens
