"""triton_models/: every configuration parses, and the variants agree on the interface."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format  # type: ignore[import-untyped]
from tritonclient.grpc import model_config_pb2 as mc

from quotaflow.triton.protocol import INPUTS, OUTPUTS
from tests.triton.conftest import MODEL_REPOSITORY

MODELS = ("echo", "smollm2")


def load(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def all_configs() -> list[Path]:
    return sorted(MODEL_REPOSITORY.glob("*/config.pbtxt")) + sorted(
        MODEL_REPOSITORY.glob("*/configs/*.pbtxt")
    )


def test_the_repository_holds_the_models() -> None:
    models = sorted(p.name for p in MODEL_REPOSITORY.iterdir() if p.is_dir())
    assert models == list(MODELS)  # any other folder would be loaded as a model
    for name in MODELS:
        assert (MODEL_REPOSITORY / name / "1" / "model.py").is_file()


@pytest.mark.parametrize("path", all_configs(), ids=lambda p: str(p.relative_to(MODEL_REPOSITORY)))
def test_config(path: Path) -> None:
    config = load(path)
    model_dir = path.parent if path.name == "config.pbtxt" else path.parent.parent
    assert config.name == model_dir.name
    assert config.backend == "python"
    inputs = {i.name for i in config.input}
    assert {"prompt", "messages", "max_tokens", "temperature"} <= inputs <= set(INPUTS)
    assert [o.name for o in config.output] == list(OUTPUTS)
    assert all(list(i.dims) == [1] for i in config.input)
    assert [i.name for i in config.input if not i.optional] == ["max_tokens"]
    kind = mc.ModelInstanceGroup.KIND_GPU if path.stem == "gpu" else mc.ModelInstanceGroup.KIND_CPU
    assert [g.kind for g in config.instance_group] == [kind]
    if path.stem != "unbatched":
        assert config.max_batch_size > 1
        assert config.HasField("dynamic_batching")


@pytest.mark.parametrize("name", MODELS)
def test_the_gpu_variant_differs_only_in_placement(name: str) -> None:
    cpu = load(MODEL_REPOSITORY / name / "config.pbtxt")
    gpu = load(MODEL_REPOSITORY / name / "configs" / "gpu.pbtxt")
    assert list(cpu.input) == list(gpu.input)
    assert list(cpu.output) == list(gpu.output)
    assert cpu.max_batch_size == gpu.max_batch_size
    assert cpu.dynamic_batching == gpu.dynamic_batching


def test_echo_and_smollm2_share_the_interface() -> None:
    echo, smol = (
        load(MODEL_REPOSITORY / "echo" / "config.pbtxt"),
        load(MODEL_REPOSITORY / "smollm2" / "config.pbtxt"),
    )
    assert list(smol.input) == [i for i in echo.input if i.name != "completion_tokens"]
    assert list(smol.output) == list(echo.output)


def test_echo_batch_cost_is_configurable() -> None:
    echo = load(MODEL_REPOSITORY / "echo" / "config.pbtxt")
    assert float(echo.parameters["batch_cost_ms"].string_value) > 0
