"""Library fixtures: the real TinyStories-656K model and seeded calibration windows from real text."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _deterministic_cpu() -> None:
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False


@pytest.fixture()
def tiny_model(tinystories_dir: Path) -> torch.nn.Module:
    """A fresh fp32 copy per test, because methods modify the model in place."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tinystories_dir, dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_tokenizer(tinystories_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tinystories_dir)


@pytest.fixture(scope="session")
def tiny_calib(tiny_tokenizer, data_dir: Path) -> torch.Tensor:
    """LongTensor [8, 128]: seeded windows of the TinyStories training text."""
    text = (data_dir / "tinystories" / "TinyStories-train.head197k.txt").read_text()[:60_000]
    ids = torch.tensor(tiny_tokenizer(text)["input_ids"], dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    starts = torch.randint(0, ids.numel() - 128, (8,), generator=gen)
    return torch.stack([ids[s : s + 128] for s in starts.tolist()])


@pytest.fixture(scope="session")
def tiny_heldout(tiny_tokenizer, data_dir: Path) -> torch.Tensor:
    """1-D LongTensor: the held-out TinyStories text, separator lines dropped."""
    lines = (data_dir / "tinystories" / "TinyStories-valid.head16k.txt").read_text().splitlines()
    text = "\n".join(line for line in lines if line.strip() != "<|endoftext|>")
    return torch.tensor(tiny_tokenizer(text)["input_ids"], dtype=torch.long)
