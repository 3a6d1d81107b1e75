"""Call a model of ``triton_models/`` over gRPC (``tritonclient.grpc.aio``).

The inference agent and the tests share this one encoding of the protocol described in
:mod:`quotaflow.triton.protocol`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio

from quotaflow.tokens import ChatMessage
from quotaflow.triton.protocol import OUTPUTS, Completion


def _tensor(name: str, value: np.ndarray[Any, Any], datatype: str) -> grpcclient.InferInput:
    t = grpcclient.InferInput(name, list(value.shape), datatype)
    t.set_data_from_numpy(value)
    return t


def make_inputs(
    *,
    prompt: str | None = None,
    messages: Sequence[ChatMessage] | None = None,
    max_tokens: int,
    temperature: float | None = None,
    completion_tokens: int | None = None,
) -> list[grpcclient.InferInput]:
    """The input tensors of one request (a batch of one row)."""
    if (prompt is None) == (messages is None):
        raise ValueError("give exactly one of prompt or messages")
    if prompt is not None:
        inputs = [_tensor("prompt", np.array([[prompt.encode()]], dtype=np.object_), "BYTES")]
    else:
        raw = json.dumps(list(messages or []), ensure_ascii=False).encode()
        inputs = [_tensor("messages", np.array([[raw]], dtype=np.object_), "BYTES")]
    inputs.append(_tensor("max_tokens", np.array([[max_tokens]], dtype=np.int32), "INT32"))
    if temperature is not None:
        inputs.append(_tensor("temperature", np.array([[temperature]], dtype=np.float32), "FP32"))
    if completion_tokens is not None:
        value = np.array([[completion_tokens]], dtype=np.int32)
        inputs.append(_tensor("completion_tokens", value, "INT32"))
    return inputs


def requested_outputs() -> list[grpcclient.InferRequestedOutput]:
    return [grpcclient.InferRequestedOutput(name) for name in OUTPUTS]


def completion_from(result: Any) -> Completion:
    """Decode an ``InferResult`` of one request."""
    text = result.as_numpy("text").reshape(-1)[0]
    return Completion(
        text=text.decode("utf-8") if isinstance(text, bytes) else str(text),
        prompt_tokens=int(result.as_numpy("prompt_tokens").reshape(-1)[0]),
        completion_tokens=int(result.as_numpy("completion_tokens").reshape(-1)[0]),
    )


async def generate(
    client: grpcaio.InferenceServerClient,
    model: str,
    *,
    prompt: str | None = None,
    messages: Sequence[ChatMessage] | None = None,
    max_tokens: int,
    temperature: float | None = None,
    completion_tokens: int | None = None,
    request_id: str = "",
    timeout_s: float | None = None,
) -> Completion:
    """One completion; a Triton error raises ``tritonclient.utils.InferenceServerException``."""
    inputs = make_inputs(
        prompt=prompt,
        messages=messages,
        max_tokens=max_tokens,
        temperature=temperature,
        completion_tokens=completion_tokens,
    )
    result = await client.infer(
        model,
        inputs,
        outputs=requested_outputs(),
        request_id=request_id,
        client_timeout=timeout_s,
    )
    return completion_from(result)
