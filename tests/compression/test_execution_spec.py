"""The job spec's `execution` block: modes, offload targets and memory limits in bytes or with units."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from compression.cli import _parser, spec_from_args
from compression.specs import ExecutionSpec, JobSpec, format_bytes, parse_bytes


def _spec(execution: dict[str, object] | None = None) -> JobSpec:
    body: dict[str, object] = {"model": "org/name", "method": "svd_llm", "target_ratio": 0.2}
    if execution is not None:
        body["execution"] = execution
    return JobSpec.model_validate(body)


def test_defaults_are_auto_on_cpu_without_limits() -> None:
    assert _spec().execution == ExecutionSpec(mode="auto", offload="cpu", max_device_memory=None, max_host_memory=None)
    assert _spec().model_dump(mode="json")["execution"] == {
        "mode": "auto", "offload": "cpu", "max_device_memory": None, "max_host_memory": None}


@pytest.mark.parametrize(("given", "expected"), [
    (25769803776, 25769803776), ("24GiB", 24 * 2**30), ("24 gib", 24 * 2**30), ("80GB", 80 * 10**9),
    ("1.5GiB", int(1.5 * 2**30)), ("512MiB", 512 * 2**20), ("2097152", 2097152), (2.5e10, 25_000_000_000),
])
def test_memory_limits_are_stored_as_bytes(given: object, expected: int) -> None:
    execution = _spec({"mode": "sequential", "offload": "disk", "max_device_memory": given,
                       "max_host_memory": given}).execution
    assert execution.max_device_memory == expected and execution.max_host_memory == expected
    assert parse_bytes(given) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("execution", "message"), [
    ({"mode": "streaming"}, "'auto', 'resident' or 'sequential'"),
    ({"offload": "gpu"}, "'cpu' or 'disk'"),
    ({"max_device_memory": "24 parsecs"}, "is not a size"),
    ({"max_host_memory": 24}, "below the 1 MiB minimum"),
    ({"max_host_memory": -5}, "below the 1 MiB minimum"),
    ({"max_host_memory": True}, "not a boolean"),
    ({"max_host_memory": [1]}, "a string like '24GiB'"),
    ({"max_memory": "24GiB"}, "Extra inputs are not permitted"),
])
def test_bad_execution_is_refused_with_what_to_fix(execution: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as exc_info:
        _spec(execution)
    assert message in str(exc_info.value) and "execution" in str(exc_info.value)


def test_schema_documents_modes_offload_and_units() -> None:
    schema = JobSpec.model_json_schema()
    execution = schema["$defs"]["ExecutionSpec"]
    assert execution["additionalProperties"] is False
    assert execution["properties"]["mode"]["enum"] == ["auto", "resident", "sequential"]
    assert execution["properties"]["offload"]["enum"] == ["cpu", "disk"]
    limit_types = {t.get("type") for t in execution["properties"]["max_device_memory"]["anyOf"]}
    assert limit_types == {"integer", "string", "null"}
    assert "24GiB" in execution["properties"]["max_device_memory"]["description"]


def test_cli_flags_become_the_execution_block() -> None:
    args = _parser().parse_args(["compress", "org/name", "--method", "svd", "--ratio", "0.2", "--out", "/tmp/x",
                                 "--execution", "sequential", "--offload", "disk", "--max-device-memory", "24GiB",
                                 "--max-host-memory", "3000000000"])
    assert spec_from_args(args).execution == ExecutionSpec(
        mode="sequential", offload="disk", max_device_memory=24 * 2**30, max_host_memory=3_000_000_000)
    default = spec_from_args(_parser().parse_args(["compress", "org/name", "--method", "svd", "--ratio", "0.2",
                                                   "--out", "/tmp/x"]))
    assert default.execution == ExecutionSpec()


def test_format_bytes() -> None:
    assert format_bytes(24 * 2**30) == "24.0 GiB" and format_bytes(1536) == "1.5 KiB" and format_bytes(12) == "12 B"
