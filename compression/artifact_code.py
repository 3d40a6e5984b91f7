"""No code from the source model in an artifact: the only code it carries is Spectra's modeling file.

A source model's files may point at Python code of their own (``auto_map`` in config.json,
tokenizer_config.json, processor and generation configs; ``custom_pipelines``), possibly in another
hub repository. Loading an artifact the documented way (``trust_remote_code=True``, which low-rank
artifacts need for ``modeling_spectra.py``) would import that code. So after the files are written,
every such reference is removed and every Python file but ours is deleted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OWN_CODE = "modeling_spectra.py"
CODE_KEYS = ("auto_map", "custom_pipelines")


def _is_own_auto_map(value: Any) -> bool:
    """config.json's auto_map as export writes it: every entry names a class in modeling_spectra."""
    return isinstance(value, dict) and bool(value) and all(
        isinstance(target, str) and target.startswith(OWN_CODE.removesuffix(".py") + ".") for target in value.values())


def strip_foreign_code(folder: Path) -> list[str]:
    """Remove code references from the folder's JSON files and delete foreign .py files; returns
    what was removed ('file:key' or 'file'), for the report."""
    removed: list[str] = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix == ".py" and path.name != OWN_CODE:
            path.unlink()
            removed.append(str(path.relative_to(folder)))
    for path in sorted(folder.rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(data, dict):
            continue
        keys = [k for k in CODE_KEYS if k in data and not (path.name == "config.json" and k == "auto_map"
                                                           and _is_own_auto_map(data[k]))]
        if not keys:
            continue
        for key in keys:
            del data[key]
            removed.append(f"{path.relative_to(folder)}:{key}")
        path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return removed
