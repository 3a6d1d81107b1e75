"""Triton Python backend shell of the ``echo`` model (logic: quotaflow.triton.echo_logic)."""

from __future__ import annotations

import time
from typing import Any

import triton_python_backend_utils as pb_utils

from quotaflow.tokens import smollm2_tokenizer
from quotaflow.triton.backend import execute_requests
from quotaflow.triton.echo_logic import echo_completion
from quotaflow.triton.protocol import Completion, GenerationRequest, config_parameters


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        params = config_parameters(args["model_config"])
        self.batch_cost_s = float(params.get("batch_cost_ms", "0")) / 1000.0
        self.tokenizer = smollm2_tokenizer()

    def run(self, request: GenerationRequest) -> Completion:
        return echo_completion(request, self.tokenizer)

    def execute(self, requests: list[Any]) -> list[Any]:
        if self.batch_cost_s > 0:
            time.sleep(self.batch_cost_s)  # once per batch, not per request
        return execute_requests(pb_utils, requests, self.run)

    def finalize(self) -> None:
        pass
