"""Both models served by a real tritonserver, called over gRPC (asyncio client)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tritonclient.grpc.aio import InferenceServerClient as Client
from tritonclient.utils import InferenceServerException

from quotaflow.tokens import ChatMessage, estimate, smollm2_tokenizer
from quotaflow.triton.client import generate, make_inputs

pytestmark = pytest.mark.triton


async def test_both_models_are_ready(triton: Client) -> None:
    assert await triton.is_server_ready()
    assert await triton.is_model_ready("smollm2")
    assert await triton.is_model_ready("echo")


async def test_smollm2_answers_a_prompt(triton: Client) -> None:
    prompt = "What is the capital of France?"
    c = await generate(triton, "smollm2", prompt=prompt, max_tokens=6)
    assert c.prompt_tokens == estimate("smollm2", prompt, None, 6).prompt_tokens
    assert 0 < c.completion_tokens <= 6
    assert c.text.strip()
    assert smollm2_tokenizer().count(c.text) == c.completion_tokens


async def test_smollm2_answers_chat_messages(triton: Client) -> None:
    messages: list[ChatMessage] = [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Is water wet?"},
    ]
    c = await generate(triton, "smollm2", messages=messages, max_tokens=4, temperature=0.7)
    assert c.prompt_tokens == estimate("smollm2", None, messages, 4).prompt_tokens
    assert c.completion_tokens <= 4
    assert smollm2_tokenizer().count(c.text) == c.completion_tokens


async def test_smollm2_never_exceeds_max_tokens(triton: Client) -> None:
    c = await generate(triton, "smollm2", prompt="Write a long essay on rivers.", max_tokens=3)
    assert c.completion_tokens == 3  # the essay would go on: it is cut exactly at max_tokens


async def test_echo_is_deterministic(triton: Client) -> None:
    first = await generate(triton, "echo", prompt="same input", max_tokens=50)
    second = await generate(triton, "echo", prompt="same input", max_tokens=50)
    other = await generate(triton, "echo", prompt="other input", max_tokens=50)
    assert first == second
    assert first.text != other.text
    e = estimate("echo", "same input", None, 50)
    assert first.prompt_tokens == e.prompt_tokens
    assert first.completion_tokens == min(50, e.prompt_tokens)
    assert smollm2_tokenizer().count(first.text) == first.completion_tokens


async def test_echo_answers_the_requested_count_capped_at_max_tokens(triton: Client) -> None:
    c = await generate(triton, "echo", prompt="x", max_tokens=40, completion_tokens=7)
    assert c.completion_tokens == 7
    capped = await generate(triton, "echo", prompt="x", max_tokens=5, completion_tokens=7)
    assert capped.completion_tokens == 5


async def _counts(client: Client, model: str) -> tuple[int, int]:
    stats: Any = await client.get_inference_statistics(model, as_json=True)
    entry = stats["model_stats"][0]
    return int(entry.get("inference_count", 0)), int(entry.get("execution_count", 0))


async def test_echo_batches_concurrent_requests(triton: Client) -> None:
    inferences0, executions0 = await _counts(triton, "echo")
    n = 24
    results = await asyncio.gather(
        *(generate(triton, "echo", prompt=f"p{i}", max_tokens=3) for i in range(n))
    )
    assert [r.completion_tokens for r in results] == [3] * n
    # Triton records statistics just after it sends a response: wait until all n are counted
    for _ in range(50):
        inferences1, executions1 = await _counts(triton, "echo")
        if inferences1 - inferences0 >= n:
            break
        await asyncio.sleep(0.1)
    assert inferences1 - inferences0 == n
    # dynamic batching: fewer execute calls than requests
    assert executions1 - executions0 < n


async def test_unknown_model_is_a_clear_error(triton: Client) -> None:
    with pytest.raises(InferenceServerException, match="unknown model: 'gpt-17'"):
        await triton.infer("gpt-17", make_inputs(prompt="hi", max_tokens=1))


async def test_bad_request_is_a_clear_error(triton: Client) -> None:
    inputs = make_inputs(prompt="hi", max_tokens=1)[1:]  # max_tokens only
    with pytest.raises(InferenceServerException, match="exactly one of the inputs") as err:
        await triton.infer("echo", inputs)
    assert "INVALID_ARGUMENT" in str(err.value.status())
