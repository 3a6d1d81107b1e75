"""quotaflow.triton.protocol: decoding and encoding the shared model tensors."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from quotaflow.tokens import render_input
from quotaflow.triton.protocol import (
    BadRequestError,
    Completion,
    GenerationRequest,
    config_parameters,
    decode_request,
    encode_completion,
    serve_one,
)


def b(text: str) -> np.ndarray[Any, Any]:
    return np.array([[text.encode()]], dtype=np.object_)


def i32(value: int) -> np.ndarray[Any, Any]:
    return np.array([[value]], dtype=np.int32)


def test_prompt_request() -> None:
    req = decode_request({"prompt": b("hi"), "max_tokens": i32(5)})
    assert req == GenerationRequest(rendered=render_input("hi", None), max_tokens=5)


def test_messages_request_with_options() -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "ü"}]
    req = decode_request(
        {
            "messages": b(json.dumps(messages)),
            "max_tokens": i32(9),
            "temperature": np.array([[0.5]], dtype=np.float32),
            "completion_tokens": i32(3),
        }
    )
    assert req.rendered == render_input(None, messages)
    assert (req.max_tokens, req.temperature, req.completion_tokens) == (9, 0.5, 3)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"max_tokens": i32(1)}, "exactly one of the inputs"),
        ({"prompt": b("a"), "messages": b("[]"), "max_tokens": i32(1)}, "exactly one"),
        ({"prompt": b("a")}, "'max_tokens' is required"),
        ({"prompt": b("a"), "max_tokens": i32(0)}, "max_tokens must be >= 1"),
        ({"prompt": b("a"), "max_tokens": np.array([[1, 2]], dtype=np.int32)}, "one value"),
        ({"prompt": np.array([[b"\xff"]], dtype=np.object_), "max_tokens": i32(1)}, "UTF-8"),
        ({"messages": b("{not json"), "max_tokens": i32(1)}, "not JSON"),
        ({"messages": b('[{"role": "x", "content": ""}]'), "max_tokens": i32(1)}, "role"),
        (
            {"prompt": b("a"), "max_tokens": i32(1), "temperature": np.array([[9.0]])},
            "temperature",
        ),
        ({"prompt": b("a"), "max_tokens": i32(1), "completion_tokens": i32(-1)}, ">= 0"),
        ({"prompt": b("a"), "max_tokens": np.array([[1.5]])}, "integer"),
    ],
)
def test_bad_requests(inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        decode_request(inputs)


def test_encode_completion_shapes_and_types() -> None:
    out = encode_completion(Completion(text="héllo", prompt_tokens=7, completion_tokens=2))
    assert out["text"].shape == (1, 1)
    assert out["text"][0, 0] == "héllo".encode()
    assert out["prompt_tokens"].dtype == np.int32
    assert out["prompt_tokens"][0, 0] == 7
    assert out["completion_tokens"][0, 0] == 2


def test_serve_one_returns_errors_instead_of_raising() -> None:
    def run(req: GenerationRequest) -> Completion:
        return Completion(text="x", prompt_tokens=1, completion_tokens=req.max_tokens)

    ok = serve_one({"prompt": b("a"), "max_tokens": i32(4)}, run)
    assert not isinstance(ok, Exception)
    assert ok["completion_tokens"][0, 0] == 4
    err = serve_one({"prompt": b("a")}, run)
    assert isinstance(err, BadRequestError)


def test_config_parameters() -> None:
    config = {
        "name": "echo",
        "parameters": {"batch_cost_ms": {"string_value": "10"}, "odd": {"other": 1}},
    }
    assert config_parameters(json.dumps(config)) == {"batch_cost_ms": "10"}
    assert config_parameters({"name": "x"}) == {}
