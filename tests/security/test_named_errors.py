"""Finding: pickle-only weights, a custom tokenizer, a broken config.json, a shape mismatch and an overlong
path all ended as `internal`, with text telling the user to pass `weights_only=False` or
`trust_remote_code=True`. Each is the user's fault: a named error saying what to change, naming no
server path and never advising to lower a safety setting. A link out of an allowed model folder is refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.security import models
from tests.security.conftest import HostileStack
from tests.service.support.client import FAST_JOB

UNSAFE_ADVICE = ("trust_remote_code", "weights_only", "ignore_mismatched_sizes")


def _overlong(root: Path) -> str:
    return f"{root}/{'a' * 300}"


def _link_outside(root: Path) -> str:
    secret = root.parent / "outside-the-roots.json"
    secret.write_text("{}")
    return models.link_outside(root, "links-out", secret).name


FAULTS: dict[str, tuple[Callable[[Path], str], str]] = {
    "pickle-only weights": (lambda root: models.pickled_weights(root, "pickled").name, "unsupported_model_format"),
    "custom tokenizer": (lambda root: models.custom_tokenizer(root, "custom-tokenizer").name,
                         "unsupported_model_format"),
    "broken config.json": (lambda root: models.broken_config(root, "broken-config").name, "invalid_config"),
    "shape mismatch": (lambda root: models.shape_mismatch(root, "shape-mismatch").name, "invalid_config"),
    "overlong path": (_overlong, "model_not_found"),
    "link out of a model folder": (_link_outside, "path_not_allowed"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_faulty_model_fails_with_a_named_actionable_error(hostile: HostileStack, fault: str) -> None:
    make, code = FAULTS[fault]
    hostile.worker()
    carol = hostile.client("carol")
    model = make(hostile.model_root)
    job = carol.submit_ok({**FAST_JOB, "model": model})
    final = carol.wait_terminal(job["id"], timeout=180)
    assert final["status"] == "failed" and final["error"]["code"] == code, final["error"]
    message = final["error"]["message"]
    assert not any(advice in message for advice in UNSAFE_ADVICE), message
    told = message.replace(model, "<model>")  # the user's own input may be echoed; no other server path
    assert str(hostile.model_root.parent) not in told, message
    assert final["attempts"] == 1  # the user's fault: never retried
