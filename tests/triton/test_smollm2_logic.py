"""quotaflow.triton.smollm2_logic: SmolLM2 on llama.cpp, outside Triton."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quotaflow.tokens import estimate, render_input, smollm2_tokenizer
from quotaflow.triton.protocol import BadRequestError, GenerationRequest
from quotaflow.triton.smollm2_logic import SmolLM2, SmolLM2Config

pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def model() -> Iterator[SmolLM2]:
    m = SmolLM2.load(SmolLM2Config(n_ctx=256, n_threads=1))
    yield m
    m.close()


def test_config_from_parameters() -> None:
    assert SmolLM2Config.from_parameters({}) == SmolLM2Config()
    config = SmolLM2Config.from_parameters(
        {"model_path": "/m.gguf", "n_ctx": "1024", "n_threads": " ", "n_gpu_layers": "-1"}
    )
    assert config == SmolLM2Config(model_path=Path("/m.gguf"), n_ctx=1024, n_gpu_layers=-1)


def test_prompt_tokens_are_the_estimate(model: SmolLM2) -> None:
    prompt = "Name a colour."
    c = model.generate(GenerationRequest(rendered=render_input(prompt, None), max_tokens=6))
    assert c.prompt_tokens == estimate("smollm2", prompt, None, 6).prompt_tokens
    assert 0 < c.completion_tokens <= 6
    assert smollm2_tokenizer().count(c.text) == c.completion_tokens


def test_greedy_is_deterministic(model: SmolLM2) -> None:
    req = GenerationRequest(rendered=render_input("Count: one, two,", None), max_tokens=5)
    assert model.generate(req) == model.generate(req)


def test_max_tokens_one(model: SmolLM2) -> None:
    req = GenerationRequest(rendered=render_input("Write a long story.", None), max_tokens=1)
    assert model.generate(req).completion_tokens == 1


def test_the_context_limits_the_output(model: SmolLM2) -> None:
    assert model.n_ctx == 256
    filler = "Write a long story about rivers." + " river" * 205
    rendered = render_input(filler, None)
    room = model.n_ctx - len(model.prompt_ids(rendered))
    assert 0 < room < 20
    c = model.generate(GenerationRequest(rendered=rendered, max_tokens=500))
    assert c.completion_tokens <= room


def test_a_prompt_longer_than_the_context(model: SmolLM2) -> None:
    rendered = render_input(" river" * 300, None)
    with pytest.raises(BadRequestError, match="context holds 256"):
        model.generate(GenerationRequest(rendered=rendered, max_tokens=1))
