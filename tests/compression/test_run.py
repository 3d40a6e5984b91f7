"""run(): bad inputs fail with the right error and leave nothing behind; the ratio check; RNG isolation."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from compression.errors import InvalidInput, ModelNotFound, PathNotAllowed, RatioNotReached, UnsupportedArchitecture
from compression.run import RunSettings, run
from compression.specs import JobSpec


def _spec(**overrides: object) -> JobSpec:
    base: dict[str, object] = dict(
        model="TinyStories-656K", method="svd", target_ratio=0.3, device="cpu",
        calibration={"source": "tinystories", "samples": 2, "seq_len": 64},
        evaluation={"corpus": "tinystories", "seq_len": 128, "max_windows": 1},
    )
    return JobSpec.model_validate({**base, **overrides})


@pytest.fixture(scope="module")
def settings(shared_dir: Path) -> RunSettings:
    return RunSettings(model_roots=(shared_dir / "models",), data_dir=shared_dir / "data",
                       data_roots=(shared_dir / "data",))


def _fails(exc: type[Exception], match: str, spec: JobSpec, settings: RunSettings, tmp_path: Path) -> None:
    with pytest.raises(exc, match=match):
        run(spec, tmp_path / "out", settings=settings)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith("out")]
    assert leftovers == [], "a failed run must leave no output"


def test_unknown_model(settings: RunSettings, tmp_path: Path) -> None:
    _fails(ModelNotFound, "no model folder named 'Nope'", _spec(model="Nope"), settings, tmp_path)


def test_path_outside_roots(settings: RunSettings, tmp_path: Path, tinystories_dir: Path) -> None:
    narrow = RunSettings(model_roots=(tmp_path / "elsewhere",), data_dir=settings.data_dir)
    _fails(PathNotAllowed, "outside the allowed model roots", _spec(model=str(tinystories_dir)), narrow, tmp_path)


def test_unsupported_architecture(settings: RunSettings, tmp_path: Path) -> None:
    roots = tmp_path / "models"
    (roots / "bert").mkdir(parents=True)
    (roots / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    out = tmp_path / "outs"
    out.mkdir()
    with pytest.raises(UnsupportedArchitecture, match="supported architectures: gemma2, .*llama, mistral, mixtral"):
        run(_spec(model="bert"), out / "o", settings=RunSettings(model_roots=(roots,), data_dir=settings.data_dir))
    assert list(out.iterdir()) == []


def test_calibration_file_outside_data_roots(settings: RunSettings, tmp_path: Path) -> None:
    story = tmp_path / "story.txt"
    story.write_text("Once upon a time. " * 500)
    spec = _spec(method="svd_llm", calibration={"source": "file", "path": str(story), "seq_len": 64})
    _fails(PathNotAllowed, "outside this server's data roots", spec, settings, tmp_path)


def test_windows_longer_than_the_model(settings: RunSettings, tmp_path: Path) -> None:
    _fails(InvalidInput, "exceeds the model's maximum of 512", _spec(evaluation={"seq_len": 1024}), settings, tmp_path)


def test_existing_output_folder(settings: RunSettings, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(InvalidInput, match="already exists"):
        run(_spec(), tmp_path / "out", settings=settings)


def test_ratio_not_reached_gives_both_numbers(settings: RunSettings, tmp_path: Path) -> None:
    strict = RunSettings(model_roots=settings.model_roots, data_dir=settings.data_dir, ratio_tolerance=1e-9)
    _fails(RatioNotReached, r"removed 0\.3\d+ of the decoder linear parameters but the target was 0\.3000",
           _spec(), strict, tmp_path)


def test_spec_as_dict_and_caller_rng_untouched(settings: RunSettings, tmp_path: Path) -> None:
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    result = run(_spec().model_dump(mode="json"), tmp_path / "out", settings=settings)
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    assert result.report["source"]["kind"] == "local" and result.report["versions"]["torch"] == torch.__version__
    assert result.report["protocol"]["windows"] == 1 and result.report["protocol"]["seq_len"] == 128
