"""Finding: an artifact kept the source tokenizer's `auto_map`; loading it the documented way
(`trust_remote_code=True`, which low-rank artifacts need) ran a tokenizer class from another repository.

The source model here carries `auto_map` in config.json, tokenizer_config.json, generation_config.json
and a processor config, each pointing at a module in its folder that leaves a marker file when imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from compression.run import RunSettings, run
from tests.conftest import SHARED

CODE = """
import pathlib
pathlib.Path({marker!r}).write_text("imported {name}")
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
class Config(LlamaConfig):
    pass
class Model(LlamaForCausalLM):
    pass
class Tokenizer(PreTrainedTokenizerFast):
    pass
"""

LOAD_ARTIFACT = """
import sys
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
folder = sys.argv[1]
AutoConfig.from_pretrained(folder, trust_remote_code=True)
AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
GenerationConfig.from_pretrained(folder)
print(sorted(m for m in sys.modules if m.startswith("transformers_modules.")))
"""


def _add(path: Path, **keys: object) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**data, **keys}))


def _hostile_source(folder: Path, marker: Path) -> None:
    shutil.copytree(SHARED / "models" / "TinyStories-656K", folder)
    for name in ("evil_config", "evil_tokenizer", "evil_processor"):
        (folder / f"{name}.py").write_text(CODE.format(marker=str(marker), name=name))
    _add(folder / "config.json", auto_map={"AutoConfig": "evil_config.Config",
                                           "AutoModelForCausalLM": "evil_config.Model"})
    _add(folder / "tokenizer_config.json", auto_map={"AutoTokenizer": ["evil_tokenizer.Tokenizer", None]})
    _add(folder / "generation_config.json", auto_map={"AutoConfig": "evil_config.Config"})
    _add(folder / "processor_config.json", auto_map={"AutoProcessor": "evil_processor.Processor"},
         custom_pipelines={"text-generation": {"impl": "evil_processor.Pipeline"}})


def test_artifact_from_a_source_with_auto_map_imports_only_spectras_code(tmp_path: Path) -> None:
    marker = tmp_path / "imported.txt"
    _hostile_source(tmp_path / "models" / "hostile", marker)
    spec = {"model": "hostile", "method": "svd", "target_ratio": 0.2,
            "calibration": {"source": "tinystories", "samples": 4, "seq_len": 64},
            "evaluation": {"corpus": "tinystories", "seq_len": 128, "max_windows": 2}}
    result = run(spec, tmp_path / "out", settings=RunSettings(data_dir=SHARED / "data",
                                                              model_roots=(tmp_path / "models",)))
    # The worker's own loads use trust_remote_code=False: compressing imported none of the model's code.
    assert not marker.exists(), marker.read_text()

    folder = Path(result.out_dir)
    assert sorted(p.name for p in folder.glob("*.py")) == ["modeling_spectra.py"]
    for path in folder.glob("*.json"):
        data = json.loads(path.read_text())
        assert "custom_pipelines" not in data, path.name
        if path.name == "config.json":
            assert all(v.startswith("modeling_spectra.") for v in data["auto_map"].values()), data["auto_map"]
        else:
            assert "auto_map" not in data, path.name

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "hf_modules")}
    done = subprocess.run([sys.executable, "-c", LOAD_ARTIFACT, str(folder)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not marker.exists(), marker.read_text()
    imported = done.stdout.strip().splitlines()[-1]
    assert "modeling_spectra" in imported and "evil" not in imported, imported
