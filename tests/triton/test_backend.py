"""quotaflow.triton.backend: the Python-backend glue, against a fake pb_utils."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quotaflow.triton.backend import execute_requests
from quotaflow.triton.protocol import Completion, GenerationRequest


@dataclass
class FakeTensor:
    name: str
    array: Any

    def as_numpy(self) -> Any:
        return self.array


class FakeError:
    INVALID_ARG = 3

    def __init__(self, message: str, code: int = 0) -> None:
        self.message, self.code = message, code


@dataclass
class FakeResponse:
    output_tensors: list[FakeTensor]
    error: FakeError | None = None


@dataclass
class FakePbUtils:
    """The three pieces of triton_python_backend_utils the glue uses."""

    Tensor: Any = FakeTensor
    TritonError: Any = FakeError
    InferenceResponse: Any = FakeResponse
    seen: list[str] = field(default_factory=list)

    def get_input_tensor_by_name(self, request: dict[str, Any], name: str) -> FakeTensor | None:
        self.seen.append(name)
        return FakeTensor(name, request[name]) if name in request else None


def run(req: GenerationRequest) -> Completion:
    return Completion(text="ok", prompt_tokens=len(req.rendered), completion_tokens=1)


def test_one_response_per_request_in_order_with_errors_inline() -> None:
    pb = FakePbUtils()
    good = {
        "prompt": np.array([[b"hi"]], dtype=np.object_),
        "max_tokens": np.array([[2]], dtype=np.int32),
    }
    bad = {"max_tokens": np.array([[2]], dtype=np.int32)}
    responses = execute_requests(pb, [good, bad, good], run)
    assert len(responses) == 3
    assert responses[0].error is None
    assert [t.name for t in responses[0].output_tensors] == [
        "text",
        "prompt_tokens",
        "completion_tokens",
    ]
    assert responses[1].output_tensors == []
    assert "exactly one" in responses[1].error.message
    assert responses[1].error.code == FakeError.INVALID_ARG
    assert responses[2].error is None
    assert "completion_tokens" in pb.seen  # every declared input is looked up
