"""Triton Python backend shell of the ``smollm2`` model (logic: quotaflow.triton.smollm2_logic)."""

from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils

from quotaflow.triton.backend import execute_requests
from quotaflow.triton.protocol import config_parameters
from quotaflow.triton.smollm2_logic import SmolLM2, SmolLM2Config


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = SmolLM2Config.from_parameters(config_parameters(args["model_config"]))
        self.model = SmolLM2.load(config)

    def execute(self, requests: list[Any]) -> list[Any]:
        # llama.cpp holds one sequence: the requests of a dynamic batch run one after another.
        return execute_requests(pb_utils, requests, self.model.generate)

    def finalize(self) -> None:
        self.model.close()
