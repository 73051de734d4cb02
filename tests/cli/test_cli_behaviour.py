"""What a user of `glass-core` relies on: output folders that are never mixed or half written, exit
code 2 for every bad input, the pipeline options, equal-NFE defaults, rewards on latents,
results.json diagnostics, one progress policy and a clear error when an extra is missing."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from glass_core import _deps, _progress
from glass_core._outdir import staged_output_dir
from glass_core.cli import main
from glass_core.transitions import Glass
from tiny_pipelines import ddpm_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The embedded model, few evaluations: a fast steer run
STEER = ["steer", "--pipeline", "default", "--particles", "2", "--seed", "1", "--quiet"]
FAST = ["--transitions", "2", "--inner-steps", "2"]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def results(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "results.json").read_text())
    return data


def siblings(folder: Path) -> list[str]:
    """Hidden staging folders left beside `folder` (there must be none)."""
    return sorted(p.name for p in folder.parent.glob(f".{folder.name}.*"))


def write_reward(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "user_reward.py"
    path.write_text(body)
    return path


# ---------------------------------------------------------------------------------------------
# output folders


def test_non_empty_out_is_refused_and_left_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text("mine")
    (out / "image_001.png").write_bytes(b"mine")
    code, _, err = run([*STEER, "--reward", "digits:5", *FAST, "--out", str(out)], capsys)
    assert code == 2 and "--out" in err and "--overwrite" in err, err
    assert (out / "results.json").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["image_001.png", "results.json"]


def test_overwrite_replaces_the_whole_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second run with fewer particles leaves no stale image beside its results.json."""
    out = tmp_path / "run"
    argv = [*STEER, "--reward", "digits:5", *FAST, "--out", str(out)]
    assert run([*argv, "--particles", "3"], capsys)[0] == 0
    assert len(list(out.glob("image_*.png"))) == 3
    assert run(argv, capsys)[0] == 2  # not empty
    code, _, err = run([*argv, "--overwrite"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.glob("image_*.png")) == ["image_000.png", "image_001.png"]
    assert results(out)["images"] == ["image_000.png", "image_001.png"]
    assert siblings(out) == []


def test_failed_run_leaves_no_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A reward that fails halfway through: exit 1, no --out folder, no staging folder."""
    reward = write_reward(tmp_path, "def boom(z):\n    raise RuntimeError('reward crashed')\n")
    out = tmp_path / "run"
    argv = [*STEER, "--reward", f"latent:{reward}:boom", *FAST, "--out", str(out)]
    code, _, err = run(argv, capsys)
    assert code == 1 and "reward crashed" in err
    assert not out.exists() and siblings(out) == []


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_staged_folder_is_removed_on_interrupt_and_old_folder_kept(
    tmp_path: Path, exc: type[BaseException]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text("old")
    with pytest.raises(exc), staged_output_dir(out, overwrite=True) as folder:
        (folder / "results.json").write_text("new, partial")
        raise exc()
    assert (out / "results.json").read_text() == "old" and siblings(out) == []
    with staged_output_dir(out, overwrite=True) as folder:
        (folder / "results.json").write_text("new")
    assert (out / "results.json").read_text() == "new" and siblings(out) == []
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode


def test_out_that_is_a_file_or_the_current_folder_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "a_file"
    target.write_text("x")
    for out in (target, target / "sub"):
        code, _, err = run([*STEER, "--reward", "digits", *FAST, "--out", str(out)], capsys)
        assert code == 2 and "is a file" in err, err
    monkeypatch.chdir(tmp_path)
    code, _, err = run([*STEER, "--reward", "digits", "--overwrite", "--out", "."], capsys)
    assert code == 2 and "current folder" in err
    assert target.read_text() == "x"


# ---------------------------------------------------------------------------------------------
# exit code 2 for bad input


@pytest.fixture(scope="module")
def ddpm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny unconditional DDPMPipeline saved with save_pretrained."""
    path = tmp_path_factory.mktemp("ddpm") / "pipe"
    ddpm_pipeline(num_train_timesteps=50).save_pretrained(str(path))
    return path


def corrupt(src: Path, dst: Path, how: str) -> Path:
    import shutil

    shutil.copytree(src, dst)
    if how == "model_index":
        (dst / "model_index.json").write_text('{"_class_name": "DDPMPipeline", ')
    elif how == "weights":
        weights = next((dst / "unet").glob("*.safetensors"))
        weights.write_bytes(weights.read_bytes()[:1000])
    elif how == "config":
        (dst / "unet" / "config.json").write_text("not json")
    else:
        (dst / "model_index.json").write_text('{"_class_name": "NoSuchPipeline"}')
    return dst


@pytest.mark.parametrize("how", ["model_index", "weights", "config", "class"])
def test_corrupt_pipeline_exits_2(
    ddpm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    pipe = corrupt(ddpm_dir, tmp_path / how, how)
    out = tmp_path / "out"
    argv = ["steer", "--pipeline", str(pipe), "--reward", "digits", "--quiet", "--out", str(out)]
    code, _, err = run(argv, capsys)
    assert code == 2, err
    assert err.startswith("glass-core: error: --pipeline:") and "could not be loaded" in err
    assert "--debug" not in err and not out.exists() and siblings(out) == []
    code, _, err = run(["demo", "--model", str(pipe), "--quiet", "--out", str(out)], capsys)
    assert code == 2 and "could not be loaded" in err and not out.exists(), err


def test_device_without_gpu_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    for device, needle in (("cuda", "finds no cuda device"), ("gpu0", "not a torch device")):
        argv = [*STEER, "--reward", "digits", "--device", device, "--out", str(tmp_path / "o")]
        code, _, err = run(argv, capsys)
        assert code == 2 and needle in err and "--device" in err, err
        assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("particles = 3.7\n", "'particles' must be an integer"),
        ("lambda = true\n", "'lambda' takes a value, not true"),
        ("seed = '3'\n", "'seed' must be an integer"),
        ("lambda = 'big'\n", "'lambda' must be a number"),
        ("potential = 3\n", "'potential' must be a string"),
        ("rho = 1.5\n", "'rho'"),
        ("prompt = [1, 2]\n", "'prompt' must be a string"),
    ],
)
def test_toml_values_must_have_the_flag_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, needle: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    argv = ["steer", "--config", str(cfg), "--out", str(tmp_path / "o")]
    code, _, err = run(argv, capsys)
    assert code == 2 and needle in err, err


def test_toml_numbers_and_binary_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An integer where a float goes and a float rho are fine; a binary file is invalid TOML."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[steer]\npipeline = 'default'\nreward = 'digits:5'\nlambda = 2\nrho = 0.5\n"
        "particles = 2\ntransitions = 2\ninner-steps = 2\nquiet = true\n"
    )
    out = tmp_path / "o"
    code, _, err = run(["steer", "--config", str(cfg), "--out", str(out)], capsys)
    assert code == 0, err
    args = results(out)["args"]
    assert args["lambda_"] == 2.0 and isinstance(args["lambda_"], float) and args["rho"] == 0.5
    binary = tmp_path / "picture.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x00")
    code, _, err = run(["steer", "--config", str(binary), "--out", str(tmp_path / "p")], capsys)
    assert code == 2 and "invalid TOML" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# methods, kernels, rewards


def test_equal_nfe_defaults_across_kernels_and_sample_without_reward(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --transitions every kernel spends 50 NFE per particle; the plan is printed;
    --method sample needs no --reward."""
    seen = {}
    for kernel in ("glass", "ode", "sde"):
        out = tmp_path / kernel
        argv = [*STEER, "--method", "sample", "--particles", "1", "--transition", kernel]
        code, stdout, err = run([*argv, "--out", str(out)], capsys)
        assert code == 0, err
        assert "NFE/particle 50" in stdout
        res = results(out)
        seen[kernel] = (res["nfe"], res["num_transitions"])
        assert res["rewards"] is None and res["best_images"] == [] and res["images"]
    assert seen == {"glass": (50, 5), "ode": (50, 50), "sde": (50, 50)}
    code, _, err = run([*STEER[:-1], "--method", "sample", "--transition", "sde", "--substeps",
                        "2", "--transitions", "3", "--particles", "1", "--out",
                        str(tmp_path / "sub")], capsys)  # fmt: skip
    assert code == 0 and "3 transitions x 2 = 6 NFE per particle" in err, err
    assert results(tmp_path / "sub")["nfe"] == 6
    code, _, err = run([*STEER, "--method", "fk", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "--reward is required for --method fk" in err


def test_solver_option_reaches_glass_and_a_bad_one_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--solver picks GLASS's inner solver (results.json's kernel records it; unset: the
    library's default); an unknown one exits 2 naming the choices and creates nothing."""
    base = [*STEER, "--method", "sample", "--particles", "1", "--transitions", "2"]
    code, _, err = run([*base, "--solver", "bogus", "--out", str(tmp_path / "bad")], capsys)
    assert code == 2 and "solver must be one of" in err and "'pc'" in err, err
    assert not (tmp_path / "bad").exists()
    for flag, want in (([], Glass().solver), (["--solver", "euler"], "euler")):
        out = tmp_path / want
        code, _, err = run([*base, *flag, "--out", str(out)], capsys)
        assert code == 0, err
        assert f"solver={want!r}" in results(out)["kernel"], results(out)["kernel"]


def test_latent_and_python_rewards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """latent:FILE:FUNC scores the particles themselves; python:FILE:FUNC gets the images of the
    1-channel default model in [0, 1]."""
    reward = write_reward(
        tmp_path,
        "seen = {}\n"
        "def ink(z):\n    seen['latent'] = tuple(z.shape[1:])\n    return z.mean(dim=(1, 2, 3))\n"
        "def bright(images):\n"
        "    assert images.min() >= 0 and images.max() <= 1\n"
        "    return images.mean(dim=(1, 2, 3))\n",
    )
    for kind, func in (("latent", "ink"), ("python", "bright")):
        out = tmp_path / kind
        argv = [*STEER, "--reward", f"{kind}:{reward}:{func}", *FAST, "--out", str(out)]
        code, _, err = run(argv, capsys)
        assert code == 0, err
        res = results(out)
        assert np.shape(res["rewards"]) == (1, 2) and res["best_images"] == ["best_000.png"]
        assert res["max_reward"] == max(res["rewards"][0])
    for spec, needle in (
        ("latent:foo", "latent:FILE.py:FUNC"),
        ("latnet:/x.py:f", "unknown kind 'latnet'"),
        (f"latent:{reward}:nope", "no callable 'nope'"),
        ("aesthetic:/head.pth", "aesthetic:HEAD_FILE:CLIP_DIR"),
        (f"aesthetic:{reward}:/no/clip", "path not found: '/no/clip'"),
    ):
        code, _, err = run([*STEER, "--reward", spec, "--out", str(tmp_path / "e")], capsys)
        assert code == 2 and needle in err, (spec, err)


def test_results_json_has_ess_genealogy_best_image_and_collapse_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """FK with lambda 10 toward digit 7 at seed 0 puts all weight on one particle at the first
    potential step: results.json shows it and the command warns (also with --quiet)."""
    out = tmp_path / "fk"
    argv = ["steer", "--pipeline", "default", "--reward", "digits:7", "--particles", "8"]
    argv += ["--transitions", "5", "--inner-steps", "2", "--seed", "0", "--quiet"]
    code, _, err = run([*argv, "--out", str(out)], capsys)
    assert code == 0, err
    res = results(out)
    n_steps = len(res["ess_times"])
    assert res["ess_times"] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert np.shape(res["ess_history"]) == (n_steps, 1)
    assert np.shape(res["genealogy"]) == (n_steps, 1, 8)
    lineage = np.arange(8)  # walk the final particles' lineages back through the genealogy
    for parents in np.asarray(res["genealogy"])[::-1, 0]:
        lineage = parents[lineage]
    assert res["distinct_ancestors"] == [len(np.unique(lineage))]
    assert (out / "best_000.png").read_bytes() == (
        out / res["images"][res["best_index"][0]]
    ).read_bytes()
    early = np.asarray(res["ess_times"]) < 0.5
    collapsed = (np.asarray(res["ess_history"])[early, 0] < 1.5).any()
    assert bool(collapsed) == bool(res["warnings"])
    assert res["ess_history"][0][0] < 1.5, "the seed no longer collapses; pick another"
    assert "glass-core: warning: FK weights collapsed onto one particle early" in err
    assert "lower --lambda" in err


def test_options_of_unconditional_pipelines_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for flags in (["--guidance-scale", "3"], ["--height", "16", "--negative-prompt", "x"]):
        argv = [*STEER, "--reward", "digits", *flags, "--out", str(tmp_path / "o")]
        code, _, err = run(argv, capsys)
        assert code == 2 and flags[0] in err and "unconditional" in err, err
        assert not (tmp_path / "o").exists()


def test_reward_scale_drives_guidance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--reward-scale is the reward-guidance scale: 0 gives the unguided ODE sample."""
    base = [*STEER, "--reward", "digits:5", "--transition", "ode", "--transitions", "4"]
    rewards = {}
    for method, scale in (("guidance", "0"), ("guidance", "2"), ("sample", "0")):
        out = tmp_path / f"{method}{scale}"
        code, _, err = run(
            [*base, "--method", method, "--reward-scale", scale, "--out", str(out)], capsys
        )
        assert code == 0, err
        rewards[method + scale] = results(out)["rewards"]
    # scale 0: the same ODE sample to float rounding (the guided model takes another code path)
    np.testing.assert_allclose(rewards["guidance0"], rewards["sample0"], rtol=1e-5, atol=1e-5)
    assert np.abs(np.subtract(rewards["guidance2"], rewards["guidance0"])).max() > 1e-2


# ---------------------------------------------------------------------------------------------
# progress policy and missing extras


class FakeStream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bars on a terminal, a line per interval otherwise (and a last one), nothing disabled."""
    from tqdm import tqdm

    monkeypatch.setattr(_progress, "LOG_INTERVAL", 0.0)
    log = FakeStream(tty=False)
    monkeypatch.setattr(sys, "stderr", log)
    with _progress.progress_bar(3, True, "FK steering") as bar:
        for _ in range(3):
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("FK steering: 1/3 steps") and lines[-1].startswith(
        "FK steering: 3/3 steps"
    )
    assert "\r" not in log.getvalue()
    monkeypatch.setattr(_progress, "LOG_INTERVAL", 3600.0)
    quiet_log = FakeStream(tty=False)
    monkeypatch.setattr(sys, "stderr", quiet_log)
    with _progress.progress_bar(3, True, "short") as bar:
        bar.update(3)
    assert quiet_log.getvalue() == ""  # a short loop prints nothing
    monkeypatch.setattr(sys, "stderr", FakeStream(tty=True))
    assert isinstance(_progress.progress_bar(3, True, "x"), tqdm)
    off = _progress.progress_bar(3, False, "x")
    assert isinstance(off, tqdm) and off.disable


def test_cli_progress_lines_off_a_terminal_and_none_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_progress, "LOG_INTERVAL", 0.0)
    argv = [*STEER[:-1], "--reward", "digits", *FAST]
    code, _, err = run([*argv, "--out", str(tmp_path / "a")], capsys)
    assert code == 0 and "FK steering: 1/2 steps" in err, err
    code, _, err = run([*argv, "--quiet", "--out", str(tmp_path / "b")], capsys)
    assert code == 0 and err == "", err


def test_missing_extra_names_it_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _deps.missing_modules
    monkeypatch.setattr(
        _deps, "missing_modules", lambda *m: [x for x in m if x == "diffusers"] or real(*m)
    )
    out = tmp_path / "demo"
    code, _, err = run(["demo", "--out", str(out)], capsys)
    assert code == 2 and 'pip install "glass-core[demo]"' in err and "diffusers" in err, err
    assert not out.exists() and siblings(out) == []
    code, _, err = run([*STEER, "--reward", "digits", "--out", str(out)], capsys)
    assert code == 2 and 'pip install "glass-core[diffusers]"' in err, err
    exc = ModuleNotFoundError("No module named 'transformers'", name="transformers")
    assert 'pip install "glass-core[diffusers]"' in (_deps.describe_missing(exc) or "")


def cli(*args: str) -> Any:
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "glass_core", *args], capture_output=True, text=True, timeout=600
    )


def test_no_accelerate_notice_for_the_embedded_model(tmp_path: Path) -> None:
    """Loading the embedded model prints the plan, not diffusers' advice to install accelerate
    (meaningless for an 8x8 UNet; the diffusers extra brings accelerate for real checkpoints)."""
    proc = cli(*STEER[:-1], "--reward", "digits", *FAST, "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    assert "steer: --method fk" in proc.stderr and "accelerate" not in proc.stderr


@pytest.mark.slow
def test_quiet_silences_tokenizer_truncation(tmp_path: Path) -> None:
    """A prompt longer than the text encoder's context: diffusers warns with the cut text, except
    with --quiet."""
    import tiny_pipelines

    tiny_pipelines.sd_pipeline().save_pretrained(str(tmp_path / "sd"))
    prompt = " ".join(["a red cat on the moon"] * 4)
    argv = ["steer", "--pipeline", str(tmp_path / "sd"), "--prompt", prompt, "--method", "sample"]
    argv += ["--particles", "1", "--transitions", "2", "--inner-steps", "1"]
    loud = cli(*argv, "--out", str(tmp_path / "loud"))
    assert loud.returncode == 0 and "truncated" in loud.stderr, loud.stderr
    quiet = cli(*argv, "--quiet", "--out", str(tmp_path / "quiet"))
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
