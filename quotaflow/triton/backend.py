"""The Python-backend glue that both ``model.py`` files share.

``pb_utils`` (``triton_python_backend_utils``) exists only inside Triton's Python stub, so it is
passed in: the glue runs in tests against a small fake of the same three calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from quotaflow.triton.protocol import INPUTS, Completion, GenerationRequest, serve_one


def execute_requests(
    pb_utils: Any, requests: Sequence[Any], run: Callable[[GenerationRequest], Completion]
) -> list[Any]:
    """One ``InferenceResponse`` per request, in order; a bad request gets an error response."""
    responses = []
    for request in requests:
        inputs = {}
        for name in INPUTS:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            inputs[name] = None if tensor is None else tensor.as_numpy()
        result = serve_one(inputs, run)
        if isinstance(result, Exception):
            code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
            error = (
                pb_utils.TritonError(str(result))
                if code is None
                else pb_utils.TritonError(str(result), code)
            )
            responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
        else:
            tensors = [pb_utils.Tensor(name, arr) for name, arr in result.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
    return responses
