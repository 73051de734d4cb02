"""The `glass-core` command end to end: demo (reduced budget), config files, error paths, bench."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from glass_core.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The smallest demo that still exercises every method, the sweep, the pictures and the JSON.
TINY = ["--quick", "--quiet", "--threads", "1", "--groups", "3", "--budgets", "5"]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "glass_core", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


# ---------------------------------------------------------------------------------------------
# subprocess: the real command


def test_demo_quick_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = run_cli("demo", *TINY, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    # the printed table lists every method
    for label in ("best-of-N (GLASS)", "FK steering (SDE)", "FK steering (GLASS)", "no steering"):
        assert label in proc.stdout
    for name in ("demo_grid.png", "reward_vs_nfe.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 2000, name
    table = (out / "table.md").read_text()
    assert table.count("\n| ") == 16  # eight methods at each of the budgets 5 and 10

    res = json.loads((out / "results.json").read_text())
    assert res["config"]["particles"] == 4 and res["config"]["groups"] == 3
    assert res["config"]["nfe"] == 10 and res["config"]["glass_transitions"] == 5
    for budget in (5, 10):
        rows = {r["method"]: r for r in res["rows"] if r["nfe_budget"] == budget}
        assert set(rows) == {
            "sample_ode",
            "best_of_n_ode",
            "best_of_n_sde",
            "best_of_n_glass",
            "best_of_n_unipc",
            "best_of_n_sde_dpmpp",
            "fk_sde",
            "fk_glass",
        }
        # equal compute: the ODE/SDE baselines spend the budget, GLASS at most the budget
        for key in ("sample_ode", "best_of_n_ode", "best_of_n_sde", "fk_sde", "best_of_n_unipc"):
            assert rows[key]["nfe"] == budget
        for key in ("best_of_n_glass", "fk_glass"):
            assert budget - 5 <= rows[key]["nfe"] <= budget
        for key, row in rows.items():
            assert row["groups"] == 3 and row["particles"] == (1 if key == "sample_ode" else 4)
            assert row["reward"]["mean"] <= 0.0  # log-probabilities
            assert 0.0 <= row["heldout_p_target"]["mean"] <= 1.0
            assert row["energy_distance"]["se"] > 0
            assert row["energy_distance_clamped"]["se"] > 0 and row["feature_distance"]["se"] > 0
        # best-of-N returns the best of its samples, among them the plain ODE sample's noise
        assert rows["best_of_n_ode"]["reward"]["mean"] >= rows["sample_ode"]["reward"]["mean"]


@pytest.mark.slow
def test_demo_is_seed_deterministic(tmp_path: Path) -> None:
    args = ["demo", *TINY, "--seed", "7"]
    a = run_cli(*args, "--out", str(tmp_path / "a"))
    b = run_cli(*args, "--out", str(tmp_path / "b"))
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    ra = json.loads((tmp_path / "a" / "results.json").read_text())["rows"]
    rb = json.loads((tmp_path / "b" / "results.json").read_text())["rows"]
    for x, y in zip(ra, rb, strict=True):
        assert x["reward"] == y["reward"] and x["heldout_p_target"] == y["heldout_p_target"]


def test_bad_value_exits_2_with_message_and_no_traceback(tmp_path: Path) -> None:
    proc = run_cli("demo", "--nfe", "7", "--glass-transitions", "2", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "--nfe" in proc.stderr and "multiple of --glass-transitions" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results.json").exists()


def test_debug_shows_traceback(tmp_path: Path) -> None:
    proc = run_cli("demo", "--particles", "0", "--debug", "--out", str(tmp_path))
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "--particles" in proc.stderr


def test_help_documents_defaults() -> None:
    proc = run_cli("demo", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for snippet in (
        "--particles PARTICLES",
        "(default: 8)",
        "--glass-transitions",
        "(default: 5)",
        "--quiet",
        "--config",
        "(default: glass_out/demo)",
    ):
        assert snippet in text, snippet
    steer = " ".join(run_cli("steer", "--help").stdout.split())
    for snippet in (
        "--pipeline",
        "--prompt",
        "--reward",
        "--method",
        "--transition",
        "--particles",
        "(default: glass)",
        "(default: fk)",
    ):
        assert snippet in steer, snippet


# ---------------------------------------------------------------------------------------------
# in-process: config files and error paths (fast)


def write_toml(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_toml_config_and_flag_precedence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_toml(
        tmp_path / "demo.toml",
        """
        quiet = true
        [demo]
        particles = 2
        groups = 3
        nfe = 4
        glass-transitions = 2
        budgets = [2]
        lambda = 2.5
        threads = 1
        reward-kind = "template"
        """,
    )
    out = tmp_path / "o"
    code = main(["demo", "--config", str(cfg), "--seed", "3", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())["config"]
    assert (res["particles"], res["groups"], res["nfe"], res["glass_transitions"]) == (2, 3, 4, 2)
    assert res["lambda_"] == 2.5 and res["budgets"] == [2] and res["seed"] == 3
    assert res["reward_kind"] == "template"
    assert "closed-form quadratic" in (out / "table.md").read_text()


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("partikles = 3\n", "unknown key 'partikles'"),
        ("particles = 'many'\n", "'particles'"),
        ("potential = 'median'\n", "must be one of"),
        ("quick = 1\n", "true or false"),
        ("particles = [\n", "invalid TOML"),
    ],
)
def test_bad_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, needle: str
) -> None:
    cfg = write_toml(tmp_path / "c.toml", toml)
    assert main(["demo", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["demo", "--config", "/nonexistent/x.toml"], "--config"),
        (["demo", "--model", "/nonexistent/model"], "--model"),
        (["demo", "--particles", "0"], "--particles"),
        (["demo", "--target", "12"], "--target"),
        (["demo", "--budgets", "0"], "--budgets"),
        (["steer", "--reward", "digits"], "--pipeline"),
        (
            ["steer", "--pipeline", "/nonexistent", "--prompt", "a", "--reward", "clip:/x"],
            "--pipeline",
        ),
        (["steer", "--pipeline", "default", "--reward", "clip:/x"], "--reward"),
        (["steer", "--pipeline", "default", "--reward", "digits", "--prompt", "a"], "--prompt"),
        (
            [
                "steer",
                "--pipeline",
                "default",
                "--reward",
                "digits",
                "--distributed",
                "--method",
                "guidance",
            ],
            "--distributed shards --method fk or best_of_n only",
        ),
        (["steer", "--pipeline", "default", "--reward", "digits:11"], "--reward"),
        (["steer", "--pipeline", "default", "--reward", "digits", "--rho", "2"], "--rho"),
        (
            ["steer", "--pipeline", "default", "--reward", "digits", "--particles", "0"],
            "--particles",
        ),
        (["bench", "--benches", "/nonexistent"], "--benches"),
    ],
)
def test_error_paths_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("glass-core: error:") and needle in err, err
    assert "Traceback" not in err


def test_size_beyond_memory_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Refused before anything is allocated (it used to abort with exit 134)."""
    argv = ["steer", "--pipeline", "default", "--reward", "digits", "--transitions", str(10**11)]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "glass-core: error: --transitions = 100000000000 is too large" in err
    assert "Traceback" not in err


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--potential", "median"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main([]) == 2


def test_steer_default_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s"
    argv = [
        "steer",
        "--pipeline",
        "default",
        "--reward",
        "digits:5",
        "--method",
        "fk",
        "--transition",
        "glass",
        "--particles",
        "3",
        "--transitions",
        "2",
        "--inner-steps",
        "2",
        "--seed",
        "1",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(argv) == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["nfe"] == 4 and np_shape(res["rewards"]) == (1, 3)
    assert np_shape(res["log_weights"]) == (1, 3) and len(res["log_evidence"]) == 1
    assert res["images"] == ["image_000.png", "image_001.png", "image_002.png"]
    assert all((out / n).read_bytes()[:8] == PNG_MAGIC for n in res["images"])


def test_steer_unconditional_ddpm_pipeline(tmp_path: Path) -> None:
    """A saved unconditional DDPMPipeline (VP schedule, epsilon) goes through glass_core.steer like
    the embedded model; a user image reward (images in [0, 1]) via python:FILE:FUNC."""
    from tiny_pipelines import ddpm_pipeline

    ddpm_pipeline(num_train_timesteps=50, channels=3).save_pretrained(str(tmp_path / "pipe"))
    (tmp_path / "r.py").write_text("def red(z):\n    return z[:, 0].mean(dim=(1, 2))\n")
    out = tmp_path / "out"
    argv = [
        "steer",
        "--pipeline",
        str(tmp_path / "pipe"),
        "--reward",
        f"python:{tmp_path / 'r.py'}:red",
        "--method",
        "best_of_n",
        "--transition",
        "sde",
        "--particles",
        "3",
        "--transitions",
        "4",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["nfe"] == 4 and np_shape(res["rewards"]) == (1, 3)
    assert res["best_index"][0] in (0, 1, 2) and len(res["images"]) == 3
    digits = [*argv[:4], "--reward", "digits:3", "--out", str(tmp_path / "digits")]
    assert main(digits) == 2  # 3x8x8 != 1x8x8
    assert not (tmp_path / "digits").exists()


def test_bench_runs_scripts_and_writes_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    benches = tmp_path / "benches"
    benches.mkdir()
    (benches / "bench_ok.py").write_text(
        "print('| a | b |')\nprint('|---|---|')\nprint('| 1 | 2 |')\n"
    )
    (benches / "bench_fail.py").write_text("raise SystemExit('boom')\n")
    out = tmp_path / "o"
    assert main(["bench", "--benches", str(benches), "--only", "bench_ok", "--out", str(out)]) == 0
    assert "| 1 | 2 |" in (out / "bench_ok.md").read_text()
    summary = json.loads((out / "bench.json").read_text())
    assert summary[0]["script"] == "bench_ok.py" and summary[0]["exit_code"] == 0
    capsys.readouterr()
    assert main(["bench", "--benches", str(benches), "--only", "ok", "--list"]) == 0  # short name
    assert capsys.readouterr().out.strip() == "bench_ok.py"

    (benches / "bench_args.py").write_text("import sys\nprint('| args |', *sys.argv[1:])\n")
    argv = ["bench", "--benches", str(benches), "--only", "bench_args.py", "--out", str(out)]
    assert main([*argv, "--script-args", "--quick --n 3", "--overwrite"]) == 0
    assert "| args | --quick --n 3" in (out / "bench_args.md").read_text()
    assert not (out / "bench_ok.md").exists()  # --overwrite replaced the folder
    (benches / "bench_args.py").unlink()
    failing = ["bench", "--benches", str(benches), "--quiet", "--out", str(tmp_path / "f")]
    assert main(failing) == 1
    err = capsys.readouterr().err
    assert "1 of 2 bench script(s) failed" in err
    # a failed script's table and the summary are kept (the failure is in bench.json)
    summary = json.loads((tmp_path / "f" / "bench.json").read_text())
    assert [s["exit_code"] != 0 for s in summary] == [True, False]
    assert main(["bench", "--benches", str(benches), "--only", "nope", "--out", str(out)]) == 2


@pytest.mark.slow
def test_steer_tiny_random_pipeline(tmp_path: Path) -> None:
    """`steer` end to end on a tiny random SD-like pipeline saved to disk (the diffusers tests'
    fixture) with a user reward given as python:FILE:FUNC."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    tiny = pytest.importorskip("tiny_pipelines")
    pytest.importorskip("glass_core.steering")
    tiny.sd_pipeline().save_pretrained(str(tmp_path / "pipe"))
    (tmp_path / "reward.py").write_text(
        "def brightness(images):\n    return images.mean(dim=(1, 2, 3))\n"
    )
    out = tmp_path / "out"
    proc = run_cli(
        "steer",
        "--pipeline",
        str(tmp_path / "pipe"),
        "--prompt",
        "a red cat",
        "--reward",
        f"python:{tmp_path / 'reward.py'}:brightness",
        "--particles",
        "2",
        "--transitions",
        "2",
        "--inner-steps",
        "2",
        "--seed",
        "3",
        "--quiet",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert "Loading" not in proc.stderr  # no loading bars with --quiet
    res = json.loads((out / "results.json").read_text())
    assert res["nfe"] == 4 and np_shape(res["rewards"]) == (1, 2)
    assert res["images"] == ["image_000.png", "image_001.png"]
    assert all((out / name).read_bytes()[:8] == PNG_MAGIC for name in res["images"])
    bad = run_cli(
        "steer",
        "--pipeline",
        str(tmp_path / "pipe"),
        "--prompt",
        "a",
        "--reward",
        f"python:{tmp_path / 'reward.py'}:nope",
        "--out",
        str(tmp_path / "bad"),
    )
    assert bad.returncode == 2 and "no callable 'nope'" in bad.stderr


def np_shape(nested: list) -> tuple[int, ...]:
    shape = []
    while isinstance(nested, list):
        shape.append(len(nested))
        nested = nested[0]
    return tuple(shape)


def test_console_script_entry_point() -> None:
    """The installed `glass-core` command (pyproject: glass_core.cli:main) runs and exits 0."""
    import shutil

    exe = shutil.which("glass-core")
    if exe is None:
        pytest.skip("glass-core console script not installed (pip install -e .)")
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "demo" in proc.stdout and "steer" in proc.stdout


# ---------------------------------------------------------------------------------------------
# steer --distributed

STEER_TINY = [
    "steer",
    "--pipeline",
    "default",
    "--reward",
    "digits:5",
    "--transitions",
    "3",
    "--inner-steps",
    "2",
    "--seed",
    "1",
    "--quiet",
]


def test_steer_distributed_needs_torchrun(tmp_path: Path) -> None:
    """--distributed outside torchrun (no RANK / WORLD_SIZE): exit 2, says how to launch, writes
    nothing."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run(
        [sys.executable, "-m", "glass_core", *STEER_TINY, "--distributed", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("glass-core: error: --distributed: not launched under torchrun")
    assert "torchrun --nproc-per-node K --no-python glass-core steer --distributed" in proc.stderr
    assert "python -m torch.distributed.run" in proc.stderr
    assert "Traceback" not in proc.stderr and not any(tmp_path.iterdir())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_steer_distributed_torchrun_equals_single_process(tmp_path: Path) -> None:
    """`python -m torch.distributed.run --nproc-per-node 2 -m glass_core steer --distributed`
    (2 gloo ranks, 2 particles each) gives the results.json of one process with the same seed:
    rewards, log-weights and log-evidence to rounding (the CPU UNet's kernels may change the last
    bits with the batch size, 2 rows per rank vs 4: best-of-N/SDE differs by ~2e-6; this FK/GLASS
    run was bit-for-bit when written), the same resampling and best index; only rank 0 prints
    and writes."""
    args = [*STEER_TINY, "--method", "fk", "--particles", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    dist_out, single_out = tmp_path / "dist", tmp_path / "single"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--master-port", str(_free_port()), "-m", "glass_core", *args, "--distributed"]
    proc = subprocess.run(
        [*cmd, "--out", str(dist_out)], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-8000:]
    assert proc.stdout.count("over 2 ranks") == 1  # rank 0 only
    single = subprocess.run(
        [sys.executable, "-m", "glass_core", *args, "--out", str(single_out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert single.returncode == 0, single.stderr
    got = json.loads((dist_out / "results.json").read_text())
    ref = json.loads((single_out / "results.json").read_text())
    assert got["world_size"] == 2 and ref["world_size"] == 1
    assert np_shape(got["rewards"]) == (1, 4) and got["nfe"] == ref["nfe"] == 6
    for key in ("rewards", "log_weights", "log_evidence"):
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert got["best_index"] == ref["best_index"]
    assert got["images"] == ref["images"]
    assert all((dist_out / n).read_bytes()[:8] == PNG_MAGIC for n in got["images"])


# ---------------------------------------------------------------------------------------------
# import cost


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["demo", "--help"],
        ["steer", "--help"],
        ["bench", "--list"],
        ["demo", "--particles", "0"],
        ["steer", "--pipeline", "x", "--reward", "y", "--rho", "3"],
        ["steer", "--bogus"],
    ],
)
def test_help_and_argument_errors_do_not_import_torch(args: list[str]) -> None:
    """--help, listing and usage errors stay fast: neither torch nor diffusers is imported."""
    code = (
        "import sys\nfrom glass_core.cli import main\n"
        f"code = main({args!r})\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules)\n"
        "print('HEAVY', code, heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY")]
    assert line, proc.stderr
    exit_code, heavy = line[-1].split(" ", 2)[1:]
    assert heavy == "[]", f"{args} imported {heavy}"
    assert exit_code == ("0" if args[-1] in ("--help", "--list") else "2")


def test_steer_edits_an_image_file(tmp_path: Path) -> None:
    """--image/--strength on the embedded model: strength 0 writes the image back unchanged
    (8x8 grey, 0 NFE); strength 0.5 runs the transitions after t0 = 0.5 only."""
    from PIL import Image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L")
    path = tmp_path / "in.png"
    img.save(path)
    base = ["steer", "--pipeline", "default", "--reward", "digits:3", "--particles", "2"]
    base += ["--transitions", "4", "--inner-steps", "2", "--quiet", "--image", str(path)]
    out0 = tmp_path / "s0"
    assert main([*base, "--strength", "0", "--out", str(out0)]) == 0
    res = json.loads((out0 / "results.json").read_text())
    assert res["nfe"] == 0
    back = np.asarray(Image.open(out0 / res["images"][0]))
    assert np.abs(back.astype(int) - np.asarray(img).astype(int)).max() <= 1  # 8-bit rounding
    out1 = tmp_path / "s1"
    assert main([*base, "--strength", "0.5", "--out", str(out1)]) == 0
    assert json.loads((out1 / "results.json").read_text())["nfe"] == 2 * 2  # grid 0.5, 0.75, 1
    assert main([*base, "--strength", "1.5", "--out", str(tmp_path / "s2")]) == 2
    assert main([*base[:-2], "--strength", "0.5", "--out", str(tmp_path / "s3")]) == 2


def test_lazy_package_attributes() -> None:
    """`import glass_core` is light, yet every public name and submodule resolves on access."""
    code = (
        "import sys, glass_core as gc\n"
        "light = 'torch' not in sys.modules\n"
        "names = [getattr(gc, n) for n in gc.__all__]\n"
        "print('OK', light, gc._core.__version__, callable(gc.steer), 'torch' in sys.modules)\n"
        "try:\n    gc.no_such_name\nexcept AttributeError:\n    print('MISSING-RAISES')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "OK True" in proc.stdout and "True True" in proc.stdout, proc.stderr
    assert "MISSING-RAISES" in proc.stdout


@pytest.mark.parametrize(
    ("value", "parsed"), [("ddpm", "ddpm"), ("0.5", 0.5), ("-1", -1.0), (0.25, 0.25)]
)
def test_rho_flag_and_key_take_the_librarys_rho(value: object, parsed: object) -> None:
    from glass_core.cli._common import rho_type

    assert rho_type(value) == parsed  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "shown"), [("2", "2.0"), ("abc", "'abc'"), (True, "True")])
def test_bad_rho_flag_or_key_gets_the_librarys_message(value: object, shown: str) -> None:
    import argparse

    from glass_core.cli._common import rho_type

    with pytest.raises(argparse.ArgumentTypeError) as err:
        rho_type(value)  # type: ignore[arg-type]
    assert str(err.value) == f"must be a float in [-1, 1] or 'ddpm', got {shown}"
