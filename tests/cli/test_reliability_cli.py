"""Issue 23, command line: a run's results are either complete in --out or the user is told where
they are (concurrent runs, SIGTERM/SIGHUP, a failing final move, long folder names), and every
size, count, seed and thread number is refused with exit code 2 before anything loads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from glass_core import _checks, _outdir
from glass_core.cli import main

# A bench script that records its run and waits at a barrier: it creates MARKER_DIR/<tag> and
# waits until MARKER_DIR holds `parties` markers (or sleeps `hold` seconds), then prints its tag.
BARRIER_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    marker_dir, tag, parties, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    open(os.path.join(marker_dir, tag), "w").close()
    deadline = time.monotonic() + 60
    while len(os.listdir(marker_dir)) < parties and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(hold)
    print("| run |", tag)
    """
)


def _benches(tmp_path: Path) -> tuple[Path, Path]:
    benches, markers = tmp_path / "benches", tmp_path / "markers"
    benches.mkdir()
    markers.mkdir()
    (benches / "bench_barrier.py").write_text(BARRIER_SCRIPT)
    return benches, markers


def _bench_cmd(benches: Path, markers: Path, out: Path, tag: str, parties: int, hold: float):
    args = f"{markers} {tag} {parties} {hold}"
    return [sys.executable, "-m", "glass_core", "bench", "--benches", str(benches), "--quiet",
            "--out", str(out), f"--script-args={args}"]  # fmt: skip


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# item 1
def test_concurrent_runs_into_one_out_lose_no_results(tmp_path: Path) -> None:
    """Two runs pass the emptiness check, meet at a barrier, and race to move into --out: one
    wins; the other exits 1 and names the folder holding its complete results."""
    benches, markers = _benches(tmp_path)
    out = tmp_path / "out"
    procs = {
        tag: subprocess.Popen(
            _bench_cmd(benches, markers, out, tag, 2, 0.0),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("A", "B")
    }
    done = {tag: (p.wait(timeout=120), *p.communicate()) for tag, p in procs.items()}
    codes = sorted(code for code, _, _ in done.values())
    assert codes == [0, 1], done
    winner = next(tag for tag, (code, _, _) in done.items() if code == 0)
    loser = "B" if winner == "A" else "A"
    assert f"| run | {winner}" in (out / "bench_barrier.md").read_text()
    err = done[loser][2]
    assert "filled by another run" in err and "complete results are in" in err, err
    kept = Path(err.split("complete results are in ")[1].split("'")[1])
    assert f"| run | {loser}" in (kept / "bench_barrier.md").read_text()
    assert json.loads((kept / "bench.json").read_text())[0]["exit_code"] == 0


# item 3
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_leave_no_staging_folder(tmp_path: Path, signum: int) -> None:
    benches, markers = _benches(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _bench_cmd(benches, markers, out, "A", 1, 60.0),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (markers / "A").exists() and time.monotonic() < deadline:  # the barrier
        time.sleep(0.02)
    assert _hidden(tmp_path), "the run should be writing into its staging folder"
    proc.send_signal(signum)
    code = proc.wait(timeout=60)
    err = proc.stderr.read() if proc.stderr else ""
    assert code == 128 + signum, (code, err)
    assert _hidden(tmp_path) == [] and not out.exists(), _hidden(tmp_path)
    assert "Traceback" not in err


# item 4
@pytest.mark.parametrize("overwrite", [False, True])
def test_failed_final_move_names_where_the_results_are(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    overwrite: bool,
) -> None:
    benches = tmp_path / "benches"
    benches.mkdir()
    (benches / "bench_ok.py").write_text("print('| ok |')\n")
    out = tmp_path / "out"
    if overwrite:
        out.mkdir()
        (out / "old.txt").write_text("old run")
    real = _outdir._rename

    def no_space(src: Path, dst: Path) -> None:
        if Path(dst) == out.absolute() and ".partial-" in Path(src).name:
            raise OSError(28, "No space left on device")  # ENOSPC (out of inodes)
        real(src, dst)

    monkeypatch.setattr(_outdir, "_rename", no_space)
    argv = ["bench", "--benches", str(benches), "--quiet", "--out", str(out)]
    assert main(argv + ["--overwrite"] * overwrite) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "complete results are in" in err, err
    kept = Path(err.split("complete results are in ")[1].split("'")[1])
    assert "| ok |" in (kept / "bench_ok.md").read_text()
    if overwrite:  # the old run is back in place
        assert (out / "old.txt").read_text() == "old run" and len(list(out.iterdir())) == 1
    else:
        assert not out.exists()
    assert [p for p in tmp_path.iterdir() if ".old-" in p.name] == []


# item 7
def test_long_out_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    benches = tmp_path / "benches"
    benches.mkdir()
    (benches / "bench_ok.py").write_text("print('| ok |')\n")
    argv = ["bench", "--benches", str(benches), "--quiet", "--out"]
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    longest = tmp_path / ("a" * limit)
    assert main([*argv, str(longest)]) == 0, capsys.readouterr().err
    assert (longest / "bench_ok.md").is_file() and _hidden(tmp_path) == []
    capsys.readouterr()
    assert main([*argv, str(tmp_path / ("b" * (limit + 45)))]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and f"at most {limit}" in err and "Traceback" not in err


# items 2, 5, 6, 8: refused with exit code 2, naming the flag, before torch is even imported
STEER = ["steer", "--pipeline", "default", "--reward", "digits"]
HUGE = str(2**62)
EARLY = [
    (["demo", "--threads", "100000"], "--threads"),
    (["demo", "--threads", str(_checks.available_cpus() + 1)], "--threads"),
    (["demo", "--particles", "99999999999999999999999"], "--particles"),
    (["demo", "--particles", HUGE], "--particles"),
    (["demo", "--seed", str(2**64)], "--seed"),
    (["demo", "--seed", "-1"], "--seed"),
    (["demo", "--lambda", "nan"], "--lambda"),
    ([*STEER, "--particles", "99999999999999999999999"], "--particles"),
    ([*STEER, "--particles", HUGE], "--particles"),
    ([*STEER, "--seed", str(2**64)], "--seed"),
    ([*STEER, "--seed", "-1"], "--seed"),
    ([*STEER, "--lambda", "nan"], "--lambda"),
    ([*STEER, "--reward-scale", "nan"], "--reward-scale"),
    ([*STEER, "--lambda", "inf"], "--lambda"),
    ([*STEER, "--transitions", "0"], "--transitions"),
    ([*STEER, "--inner-steps", "0"], "--inner-steps"),
    ([*STEER, "--strength", "0.5"], "--strength"),
    (["steer", "--pipeline", "default", "--particles", "2"], "--reward"),
]


def _run_light(argv: list[str]) -> tuple[int, list[str], str]:
    code = (
        "import sys\nfrom glass_core.cli import main\n"
        f"code = main({argv!r})\n"
        "heavy = sorted(m for m in ('torch', 'diffusers') if m in sys.modules)\n"
        "print('HEAVY', code, ','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY")]
    assert line, proc.stderr
    parts = line[-1].split(" ")
    return int(parts[1]), [m for m in parts[2:] if m], proc.stderr


@pytest.mark.parametrize(("argv", "flag"), EARLY)
def test_bad_numbers_exit_2_naming_the_flag_before_anything_loads(
    tmp_path: Path, argv: list[str], flag: str
) -> None:
    code, heavy, err = _run_light([*argv, "--out", str(tmp_path / "o")])
    assert code == 2 and heavy == [], (code, heavy, err)
    assert err.startswith("glass-core: error:") and flag in err.splitlines()[0], err
    assert "Traceback" not in err and "lambda_" not in err and "num_particles" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("key", "value", "flag"),
    [("particles", HUGE, "--particles"), ("seed", str(2**64), "--seed")],
)
def test_bad_numbers_in_a_config_file_exit_2_before_anything_loads(
    tmp_path: Path, key: str, value: str, flag: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[steer]\n{key} = {value}\n")
    code, heavy, err = _run_light([*STEER, "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert code == 2 and heavy == [] and flag in err, (code, heavy, err)
