"""The inference agent against a real tritonserver and the real RabbitMQ."""

from __future__ import annotations

import pytest

from events import InferenceCompleted, InferenceFailed
from events.model import ChatMessage
from quotaflow.tokens import estimate, smollm2_tokenizer
from quotaflow.triton.server import TritonHandle, free_port
from streams.agents.inference import InferenceSettings, register_inference
from streams.agents.inference_client import TritonModelClient
from streams.rabbit_log import RabbitEventLog
from streams.runtime.app import App
from streams.topics import Topology
from tests.inference.helpers import publish, reservation, run_until_results

pytestmark = pytest.mark.services


async def make_app(log: RabbitEventLog, topo: Topology, url: str, opts: InferenceSettings) -> App:
    app = App("test-inference", log, topology=topo)
    register_inference(app, client=TritonModelClient(url), options=opts)
    return app


@pytest.mark.triton
async def test_the_models_answer_with_their_own_token_counts(
    rabbit_log: RabbitEventLog, topology: Topology, triton_server: TritonHandle
) -> None:
    messages = [
        ChatMessage(role="system", content="You answer in one word."),
        ChatMessage(role="user", content="Is water wet?"),
    ]
    batch = [
        reservation(0, model="smollm2", prompt="What is the capital of France?", max_tokens=6),
        reservation(1, model="smollm2", messages=messages, max_tokens=4),
        reservation(2, model="smollm2", prompt="Write a long essay on rivers.", max_tokens=3),
        reservation(3, model="echo", prompt="same input", max_tokens=50),
        reservation(4, model="gpt-17", prompt="hi", max_tokens=5),
    ]
    app = await make_app(rabbit_log, topology, triton_server.grpc_url, InferenceSettings())
    await publish(app, batch)
    found = {r.request_id: r for r in await run_until_results(app, len(batch))}
    assert len(found) == len(batch)
    tokenizer = smollm2_tokenizer()
    for r in batch[:4]:
        e = found[r.request_id]
        assert isinstance(e, InferenceCompleted), e
        chat = [m.model_dump() for m in r.spec.messages] if r.spec.messages else None
        expected = estimate(r.spec.model, r.spec.prompt, chat, 1)
        assert e.prompt_tokens == expected.prompt_tokens
        assert 0 < e.completion_tokens <= r.spec.max_tokens
        assert tokenizer.count(e.text) == e.completion_tokens
        assert (e.model, e.model_version) == (r.spec.model, "1")
        assert e.latency_ms > 0
    essay = found[batch[2].request_id]
    assert isinstance(essay, InferenceCompleted)
    assert essay.completion_tokens == 3  # cut exactly at max_tokens
    echo = found[batch[3].request_id]
    assert isinstance(echo, InferenceCompleted)
    assert echo.completion_tokens == min(50, echo.prompt_tokens)
    unknown = found[batch[4].request_id]
    assert isinstance(unknown, InferenceFailed)
    assert not unknown.retryable
    assert unknown.reason == "NOT_FOUND: Request for unknown model: 'gpt-17' is not found"


async def test_a_triton_that_is_down_gives_a_retryable_failure(
    rabbit_log: RabbitEventLog, topology: Topology
) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    opts = InferenceSettings(attempts=3, backoff_s=0.05, backoff_max_s=0.1, timeout_s=5)
    app = await make_app(rabbit_log, topology, nobody, opts)
    await publish(app, [reservation(i) for i in range(3)])
    found = await run_until_results(app, 3, timeout=30)
    assert len(found) == 3
    for e in found:
        assert isinstance(e, InferenceFailed)
        assert e.retryable
        assert e.reason.startswith("gave up after 3 attempt(s) in ")
        assert "UNAVAILABLE: failed to connect to all addresses" in e.reason
        assert "Connection refused" in e.reason
