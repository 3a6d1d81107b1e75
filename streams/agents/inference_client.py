"""The inference agent's port to a model server, and its Triton (gRPC asyncio) implementation.

The agent needs one thing from a model server: run one :class:`~events.model.RequestSpec` and
say what came back, or why not and whether trying again may help. :class:`ModelClient` is that
port; :class:`TritonModelClient` speaks to ``triton_models/`` through
:mod:`quotaflow.triton.client`; tests pass a fake with the same two methods.

Which Triton errors are retryable (:func:`classify`): the gRPC codes that say nothing about the
request itself — the server is down or unreachable (``UNAVAILABLE``, which is also what a
refused connection gives), no answer in time (``DEADLINE_EXCEEDED``), overloaded
(``RESOURCE_EXHAUSTED``), or the call was cut (``ABORTED``, ``CANCELLED``). Everything else is
about the request or the model and will not change on a retry: an unknown model or version
(``NOT_FOUND``), malformed input (``INVALID_ARGUMENT``), an error raised by the model
(``INTERNAL``), a response without the expected outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Protocol

from events.model import RequestSpec
from quotaflow.tokens import ChatMessage
from quotaflow.triton.client import completion_from, make_inputs, requested_outputs
from quotaflow.triton.protocol import Completion

RETRYABLE_CODES: Final = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "CANCELLED"}
)
#: gRPC reconnect backoff: the channel's default grows to 120 s while a server is down, which
#: would keep failing calls long after Triton is back; cap it near our own retry backoff.
CHANNEL_ARGS: Final = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]


@dataclass(frozen=True, slots=True)
class Answer:
    """A model's answer: the completion as the model counted it, and who answered."""

    completion: Completion
    model_version: str


class CallError(Exception):
    """One call failed. ``reason`` is meant for the client; ``retryable``: may a retry help."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class ModelClient(Protocol):
    async def generate(self, spec: RequestSpec, *, request_id: str, timeout_s: float) -> Answer:
        """Run ``spec`` once; raise :class:`CallError` when it fails."""

    async def close(self) -> None: ...


def classify(status: str | None, message: str) -> CallError:
    """A ``tritonclient`` error (``status`` like ``"StatusCode.UNAVAILABLE"``) as a CallError."""
    code = (status or "").rsplit(".", 1)[-1]
    if not code:
        return CallError(f"triton client error: {message}", retryable=False)
    return CallError(f"{code}: {message}", retryable=code in RETRYABLE_CODES)


def chat(spec: RequestSpec) -> list[ChatMessage] | None:
    if spec.messages is None:
        return None
    return [ChatMessage(role=m.role, content=m.content) for m in spec.messages]


from quotaflow.observability.triton_calls import time_triton_call  # noqa: E402


class TritonModelClient:
    """One gRPC channel to Triton, opened on first use inside the running event loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: Any = None

    def _connected(self) -> Any:
        if self._client is None:
            import tritonclient.grpc.aio as grpcaio

            self._client = grpcaio.InferenceServerClient(self.url, channel_args=CHANNEL_ARGS)
        return self._client

    async def generate(self, spec: RequestSpec, *, request_id: str, timeout_s: float) -> Answer:
        from tritonclient.utils import InferenceServerException

        inputs = make_inputs(
            prompt=spec.prompt,
            messages=chat(spec),
            max_tokens=spec.max_tokens,
            temperature=spec.temperature,
        )
        with time_triton_call(spec.model):
            try:
                result = await self._connected().infer(
                    spec.model,
                    inputs,
                    outputs=requested_outputs(),
                    request_id=request_id,
                    client_timeout=timeout_s,
                )
            except InferenceServerException as exc:
                raise classify(exc.status(), str(exc.message())) from exc
        try:
            completion = completion_from(result)
            response = result.get_response()
        except Exception as exc:  # a response without the outputs of triton_models' interface
            raise CallError(f"bad response from {spec.model!r}: {exc!r}", retryable=False) from exc
        return Answer(completion=completion, model_version=str(response.model_version or "1"))

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()
