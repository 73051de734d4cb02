"""``glass-core steer`` on the newer families' tiny pipelines: options that only some families
take (``--num-frames`` for Wan, ``--true-cfg-scale`` for Qwen-Image and FLUX) reach the pipeline,
and a family without one is refused by the library, the error naming the flag (exit code 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

import tiny_families as tf
from glass_core.cli import main
from PIL import Image


def _argv(tmp_path: Path, name: str, *extra: str) -> list[str]:
    pipe = tmp_path / name
    if not pipe.exists():
        tf.BUILDERS[name]().save_pretrained(str(pipe))
    reward = tmp_path / "reward.py"
    reward.write_text("def mean(images):\n    return images.mean(dim=(1, 2, 3))\n")
    size = tf.SMALL_CALL[name]
    return [
        *("steer", "--pipeline", str(pipe), "--prompt", "a red house"),
        *("--reward", f"python:{reward}:mean", "--method", "fk", "--particles", "2"),
        *("--transitions", "2", "--inner-steps", "1", "--quiet"),
        *("--height", str(size["height"]), "--width", str(size["width"])),
        *("--max-sequence-length", "16", "--out", str(tmp_path / f"out_{name}"), *extra),
    ]


def test_num_frames_reaches_wan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--num-frames 5 gives 5-frame videos (the pipeline's own default is 81)."""
    assert main(_argv(tmp_path, "wan", "--num-frames", "5")) == 0, capsys.readouterr().err
    out = tmp_path / "out_wan"
    record = json.loads((out / "results.json").read_text())
    for name in record["images"]:
        with Image.open(out / name) as video:
            assert video.n_frames == 5


def test_true_cfg_scale_reaches_qwenimage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _argv(tmp_path, "qwenimage", "--true-cfg-scale", "2", "--negative-prompt", "blurry")
    assert main(argv) == 0, capsys.readouterr().err
    assert len(json.loads((tmp_path / "out_qwenimage/results.json").read_text())["images"]) == 2


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [("--true-cfg-scale", "2", "has no true_cfg_scale"), ("--num-frames", "5", "num_frames")],
)
def test_option_a_family_lacks_names_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, says: str
) -> None:
    """SANA has neither option: steer() refuses it and the CLI names the flag (exit code 2)."""
    assert main(_argv(tmp_path, "sana", flag, value)) == 2
    err = capsys.readouterr().err
    assert f"error: {flag}: " in err and says in err, err
    assert not (tmp_path / "out_sana").exists()


def _default(out: Path, *extra: str) -> list[str]:
    return [
        *("steer", "--pipeline", "default", "--reward", "digits:5", "--particles", "2"),
        *("--transitions", "2", "--quiet", "--out", str(out), *extra),
    ]


def test_ode_solver_reaches_the_ode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--transition ode --solver pc runs ODE(solver="pc") (the kernel's repr in results.json);
    the solver name is the library's to check (a bad one is refused, exit code 2)."""
    out = tmp_path / "pc"
    assert main(_default(out, "--transition", "ode", "--solver", "pc")) == 0
    kernel = json.loads((out / "results.json").read_text())["kernel"]
    assert kernel.startswith("ODE(") and "'pc'" in kernel, kernel
    capsys.readouterr()
    assert main(_default(tmp_path / "bad", "--transition", "ode", "--solver", "rk4")) == 2
    assert "solver must be one of" in capsys.readouterr().err


def test_compile_is_passed_to_steer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--compile reaches steer(compile=True): with an SDE kernel steer refuses it, the error
    naming the flag (a Glass run would pay torch.compile's first call, too slow for a test)."""
    assert main(_default(tmp_path / "c", "--transition", "sde", "--compile")) == 2
    err = capsys.readouterr().err
    assert "error: --compile: compile=True applies to a Glass transition" in err, err
