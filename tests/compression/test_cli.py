"""CLI: methods listing, --option parsing, a real compress run, bad input -> exit 2 with no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compression.cli import main, options_dict
from compression.errors import InvalidInput

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch, shared_dir: Path) -> Path:
    monkeypatch.setenv("SPECTRA_MODEL_ROOTS", str(shared_dir / "models"))
    monkeypatch.setenv("SPECTRA_DATA_DIR", str(shared_dir / "data"))
    monkeypatch.delenv("SPECTRA_DATA_ROOTS", raising=False)
    return shared_dir


def test_options_parse_json_and_dotted_keys() -> None:
    assert options_dict(["alpha=0.25", "recovery.enabled=true", "recovery.max_steps=3", "scaling=abs_max",
                         'targets=["q_proj"]']) == {
        "alpha": 0.25, "recovery": {"enabled": True, "max_steps": 3}, "scaling": "abs_max", "targets": ["q_proj"]}
    with pytest.raises(InvalidInput, match="key=value"):
        options_dict(["alpha"])


def test_methods_lists_every_method_with_defaults_without_torch() -> None:
    code = ("import sys; from compression.cli import main; rc = main(['methods']); "
            "assert 'torch' not in sys.modules, 'methods must stay torch-free'; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in ("svd:", "asvd:", "svd_llm:", "shortgpt:", "grasp:", "soco:", "alpha = 0.5", "recovery.*"):
        assert name in done.stdout


def test_compress_end_to_end(env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "svd-artifact"
    rc = main(["compress", "TinyStories-656K", "--method", "svd", "--ratio", "0.3", "--out", str(out),
               "--eval-corpus", "tinystories", "--eval-seq-len", "128", "--eval-windows", "2", "--device", "cpu",
               "--execution", "resident", "--option", 'targets=["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"]'])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "perplexity (tinystories)" in captured.out and "ratio removed: 0.30" in captured.out
    report = json.loads((out / "compression.json").read_text())
    assert report["method"] == "svd" and report["protocol"]["windows"] == 2
    assert report["spec"]["execution"]["mode"] == "resident" and report["execution"]["mode"] == "resident"
    assert "compress" in captured.err  # the progress bars
    # The estimate comes first, before the run's output, with every execution mode.
    assert captured.out.startswith("preflight estimate (656,000 parameters on cpu; execution: resident)")
    assert "sequential (offload disk): device" in captured.out
    assert report["execution"]["resolved"] == "resident" and report["execution"]["estimate"]["params"] == 656_000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "svd", "--ratio", "1.5"], "target_ratio"),
        (["--method", "svd", "--ratio", "0.2", "--option", "nope=1"], "nope"),
        (["--method", "asvd", "--ratio", "0.2", "--option", "alpha=7"], "alpha"),
        (["--method", "svd", "--ratio", "0.2", "--model-x"], "unrecognized"),
        (["--method", "svd", "--ratio", "0.2", "--execution", "streamed"], "--execution"),
        (["--method", "svd", "--ratio", "0.2", "--max-host-memory", "lots"], "max_host_memory"),
        (["--method", "svd", "--ratio", "0.2", "--max-host-memory", "20MiB"], "does not fit"),
    ],
)
def test_bad_input_exits_2_with_message(argv: list[str], message: str, env: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc_info:
        raise SystemExit(main(["compress", "TinyStories-656K", "--out", str(tmp_path / "o"), *argv]))
    assert exc_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_folder_without_config_exits_2(env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["compress", "/etc", "--method", "svd", "--ratio", "0.2", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "has no config.json" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_named_folder_and_file_need_no_roots_and_plain_lines_off_a_terminal(
        tmp_path: Path, shared_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("SPECTRA_MODEL_ROOTS", "SPECTRA_DATA_ROOTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPECTRA_DATA_DIR", str(shared_dir / "data"))
    (tmp_path / "calib.txt").write_text((shared_dir / "data" / "tinystories" / "TinyStories-train.head197k.txt")
                                        .read_text()[:20000])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").symlink_to(shared_dir / "models" / "TinyStories-656K")
    rc = main(["compress", "./model", "--method", "asvd", "--ratio", "0.2", "--out", "o", "--device", "cpu",
               "--calib-source", "file", "--calib-path", "calib.txt", "--calib-samples", "2",
               "--calib-seq-len", "64", "--no-eval", "--dense"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "\r" not in captured.err and "Loading weights" not in captured.err  # lines, and no transformers bar
    lines = captured.err.splitlines()
    assert any(" compress " in line and "ETA" in line for line in lines)
    assert any(line.split("] ", 1)[-1].startswith("export 100%") for line in lines)
    report = json.loads((tmp_path / "o" / "compression.json").read_text())
    assert report["calibration"]["file"] == str(tmp_path / "calib.txt")
    # --dense: the summary gives the artifact's real (dense) parameter count, not the low-rank one
    assert report["export"]["params"] == report["params_before"]
    row = next(line for line in captured.out.splitlines() if line.startswith("parameters in the artifact"))
    assert row.split()[-1] == f"{report['params_before']:,}" and "dense export" in captured.out


def test_quiet_prints_nothing_but_the_artifact(env: Path, tmp_path: Path) -> None:
    code = ("import sys; from compression.cli import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "compress", "TinyStories-656K", "--method", "svd",
                           "--ratio", "0.2", "--out", str(tmp_path / "o"), "--no-eval", "--device", "cpu", "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout.startswith("artifact: ")


def test_terminal_shows_overall_bar_with_eta() -> None:
    import io

    from compression.cli_progress import ProgressDisplay
    from compression.progress import ProgressModel

    now = [0.0]
    stream = io.StringIO()
    display = ProgressDisplay(quiet=False, stream=stream, interactive=True)
    display.model = ProgressModel(clock=lambda: now[0])
    for stage, seconds in (("load", 2.0), ("calibrate", 1.0), ("evaluate_before", 10.0)):
        display(stage, 0.0, "")
        now[0] += seconds
        display(stage, 1.0, "")
    display("compress", 0.0, "layer 0/2: whitened SVD")
    now[0] += 30.0
    display("compress", 0.5, "layer 1/2: whitened SVD")
    display.close()
    text = stream.getvalue()
    assert "overall" in text and "layer 1/2" in text
    # 30 s for the one layer left, plus evaluate_after and export at the rate the finished work ran
    assert "ETA 00:44" in text
