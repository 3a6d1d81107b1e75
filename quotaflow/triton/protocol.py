"""The tensors that ``smollm2`` and ``echo`` share, decoded and encoded by pure functions.

Every model in ``triton_models/`` has the same interface, so the inference agent treats them
alike (``max_batch_size > 0``; each request carries ONE row, shape ``[1, 1]``):

===================== ====== ======================================================== =========
input                 dtype  meaning                                                  required
===================== ====== ======================================================== =========
``prompt``            BYTES  UTF-8 text, rendered as one user chat message            one of
``messages``          BYTES  UTF-8 JSON list of ``{"role", "content"}``               these two
``max_tokens``        INT32  the most tokens to generate, >= 1                        yes
``temperature``       FP32   0 (default) = greedy; ignored by ``echo``                no
``completion_tokens`` INT32  ``echo`` only: how many tokens to answer with            no
===================== ====== ======================================================== =========

Outputs: ``text`` (BYTES, UTF-8), ``prompt_tokens`` and ``completion_tokens`` (INT32), each of
shape ``[1, 1]``. ``completion_tokens <= max_tokens`` always.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from quotaflow.tokens import ChatMessage, parse_messages, render_input

INPUTS: Final = ("prompt", "messages", "max_tokens", "temperature", "completion_tokens")
OUTPUTS: Final = ("text", "prompt_tokens", "completion_tokens")


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One decoded request. ``rendered`` is the exact text the model evaluates."""

    rendered: str
    max_tokens: int
    temperature: float = 0.0
    completion_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int


class BadRequestError(ValueError):
    """The request's tensors are malformed; the message is returned to the client."""


def _scalar(name: str, arr: npt.NDArray[np.generic]) -> object:
    flat = np.asarray(arr).reshape(-1)
    if flat.size != 1:
        raise BadRequestError(
            f"input {name!r} must hold exactly one value per request, got shape {arr.shape}"
        )
    return flat[0].item() if isinstance(flat[0], np.generic) else flat[0]


def _text(name: str, arr: npt.NDArray[np.generic]) -> str:
    value = _scalar(name, arr)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequestError(f"input {name!r} is not valid UTF-8") from e
    if isinstance(value, str):
        return value
    raise BadRequestError(f"input {name!r} must be BYTES")


def _int(name: str, arr: npt.NDArray[np.generic]) -> int:
    value = _scalar(name, arr)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequestError(f"input {name!r} must be an integer")
    return value


def decode_messages(raw: str) -> list[ChatMessage]:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise BadRequestError(f"input 'messages' is not JSON: {e}") from e
    try:
        return parse_messages(obj)
    except ValueError as e:
        raise BadRequestError(str(e)) from e


def decode_request(inputs: Mapping[str, npt.NDArray[np.generic] | None]) -> GenerationRequest:
    """Decode one request from its input arrays (``None`` or absent = not sent)."""
    prompt_arr, messages_arr = inputs.get("prompt"), inputs.get("messages")
    if (prompt_arr is None) == (messages_arr is None):
        raise BadRequestError("send exactly one of the inputs 'prompt' or 'messages'")
    max_arr = inputs.get("max_tokens")
    if max_arr is None:
        raise BadRequestError("input 'max_tokens' is required")
    max_tokens = _int("max_tokens", max_arr)
    if max_tokens < 1:
        raise BadRequestError(f"max_tokens must be >= 1, got {max_tokens}")
    temperature = 0.0
    if (temp_arr := inputs.get("temperature")) is not None:
        value = _scalar("temperature", temp_arr)
        if not isinstance(value, float | int) or not 0.0 <= float(value) <= 2.0:
            raise BadRequestError("temperature must be a number in [0, 2]")
        temperature = float(value)
    requested: int | None = None
    if (req_arr := inputs.get("completion_tokens")) is not None:
        requested = _int("completion_tokens", req_arr)
        if requested < 0:
            raise BadRequestError(f"completion_tokens must be >= 0, got {requested}")
    if prompt_arr is not None:
        rendered = render_input(_text("prompt", prompt_arr), None)
    else:
        assert messages_arr is not None
        rendered = render_input(None, decode_messages(_text("messages", messages_arr)))
    return GenerationRequest(
        rendered=rendered,
        max_tokens=max_tokens,
        temperature=temperature,
        completion_tokens=requested,
    )


def encode_completion(c: Completion) -> dict[str, npt.NDArray[np.generic]]:
    """The output arrays of one request (batch of one row)."""
    return {
        "text": np.array([[c.text.encode("utf-8")]], dtype=np.object_),
        "prompt_tokens": np.array([[c.prompt_tokens]], dtype=np.int32),
        "completion_tokens": np.array([[c.completion_tokens]], dtype=np.int32),
    }


def config_parameters(model_config: str | Mapping[str, object]) -> dict[str, str]:
    """The ``parameters { key: ..., value: { string_value: ... } }`` of a model config."""
    config = json.loads(model_config) if isinstance(model_config, str) else model_config
    params = config.get("parameters") or {}
    if not isinstance(params, Mapping):
        return {}
    out: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, Mapping) and isinstance(value.get("string_value"), str):
            out[str(key)] = value["string_value"]
    return out


def serve_one(
    inputs: Mapping[str, npt.NDArray[np.generic] | None],
    run: Callable[[GenerationRequest], Completion],
) -> dict[str, npt.NDArray[np.generic]] | BadRequestError:
    """Decode, run and encode one request; a bad request comes back as its error."""
    try:
        return encode_completion(run(decode_request(inputs)))
    except BadRequestError as e:
        return e
