"""Issue 24, the command line as a package: one module per command, defaults from the library's
signatures (or stated), every FK potential reachable, and the one table from library arguments
to flags used for errors the library raises (no message rewriting)."""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

import pytest
from glass_core import cli
from glass_core.cli import _common, bench, demo, steer
from glass_core.cli import main as cli_main

STEER = ["steer", "--pipeline", "default", "--reward", "digits", "--quiet"]


def _actions(command: str) -> dict[str, argparse.Action]:
    parser = cli.build_parser()
    sub = cli._subparser(parser, command)
    return {a.dest: a for a in sub._actions}


def test_each_command_is_a_module_with_add_parser_and_run() -> None:
    for name, module in (("demo", demo), ("steer", steer), ("bench", bench)):
        assert callable(module.add_parser) and callable(module.run)
        assert cli.COMMANDS[name] is module.run
    assert sorted(cli.COMMANDS) == ["bench", "demo", "steer"]


def test_steer_defaults_are_the_library_defaults_or_stated() -> None:
    from glass_core.steering import steer as steer_fn
    from glass_core.transitions import ODE, SDE, Glass

    actions = _actions("steer")
    signature = inspect.signature(steer_fn).parameters
    glass = inspect.signature(Glass).parameters
    for dest, action in actions.items():
        arg = next((a for a, f in _common.FLAGS.items() if f == action.option_strings[-1]), None)
        if arg == "lambda_":  # the one deliberate override, stated in --help
            assert action.default == steer.CLI_LAMBDA != signature["lambda_"].default
            assert "not glass_core.steer's lambda_=1.0" in (action.help or "")
            continue
        if arg in signature and signature[arg].default is not None:
            # None: not passed, so the library's default applies (and the flag can be refused
            # for pipelines it does not fit)
            assert action.default in (None, signature[arg].default), dest
        elif arg in ("inner_steps", "rho"):
            assert action.default == glass[arg].default, dest
    assert actions["substeps"].default == inspect.signature(ODE).parameters["substeps"].default
    assert actions["substeps"].default == inspect.signature(SDE).parameters["substeps"].default
    assert actions["transition"].default == "glass"  # steer's transition=None means Glass()


def test_every_potential_is_a_choice_and_lookahead_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from glass_core.align.potentials import POTENTIALS

    assert tuple(_actions("steer")["potential"].choices or ()) == tuple(POTENTIALS)
    argv = [*STEER, "--potential", "lookahead", "--particles", "2", "--transitions", "2",
            "--inner-steps", "1", "--out", str(tmp_path / "o")]  # fmt: skip
    assert cli_main(argv) == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "o" / "results.json").read_text())
    assert record["args"]["potential"] == "lookahead" and len(record["rewards"][0]) == 2


def test_flag_table_names_only_real_library_arguments() -> None:
    from glass_core.align import fk_steering
    from glass_core.steering import steer as steer_fn
    from glass_core.transitions import Glass

    known = {*inspect.signature(steer_fn).parameters, *inspect.signature(Glass).parameters}
    known |= {*inspect.signature(fk_steering).parameters}  # device, dtype
    # the grid's, the CLI's, the demo's and the T5 encoders' names
    known |= {"num_steps", "seed", "substeps", "threads", "max_sequence_length", "num_frames"}
    known |= {"num_candidates"}  # value_decoding / beam_search, passed through steer
    assert set(_common.FLAGS) <= known, set(_common.FLAGS) - known
    flags = {o for a in _actions("steer").values() for o in a.option_strings}
    flags |= {o for a in _actions("demo").values() for o in a.option_strings}
    assert set(_common.FLAGS.values()) <= flags


def test_a_library_error_after_checks_is_reported_under_its_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Glass refuses inner_steps above its limit with InvalidInputError(arg='inner_steps'); the
    command line prints it as raised, under --inner-steps (through FLAGS, not by rewriting)."""
    argv = [*STEER, "--inner-steps", str(10**7), "--out", str(tmp_path / "o")]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("glass-core: error: --inner-steps: `inner_steps` must be"), err


def test_errors_carry_their_argument() -> None:
    from glass_core import _checks
    from glass_core.errors import InvalidInputError

    with pytest.raises(InvalidInputError) as info:
        _checks.steer_arguments(method="fk", reward=None, num_particles=2)
    assert info.value.arg == "reward"  # type: ignore[attr-defined]
    assert str(info.value).startswith("reward is required for method fk")
    with pytest.raises(InvalidInputError) as info:
        _checks.steer_arguments(method="fk", reward=None, num_particles=2, name=_common.flag_of)
    assert info.value.arg == "--reward"  # type: ignore[attr-defined]
    assert str(info.value).startswith("--reward is required for --method fk")


def test_old_module_path_still_runs_the_command() -> None:
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "glass_core.cli", "bench", "--list", "--benches", "benches"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0 and "bench_" in proc.stdout, proc.stderr


@pytest.mark.parametrize("method", ["tempered", "value_decoding", "beam_search"])
def test_every_method_is_a_choice_and_the_search_methods_run(
    method: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from glass_core.steering import METHODS

    assert tuple(_actions("steer")["method"].choices or ()) == tuple(METHODS)
    extra = ["--num-candidates", "2"] if method != "tempered" else []
    argv = [*STEER, "--method", method, "--particles", "2", "--transitions", "2",
            "--inner-steps", "1", *extra, "--out", str(tmp_path / "o")]  # fmt: skip
    assert cli_main(argv) == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "o" / "results.json").read_text())
    assert record["args"]["method"] == method and len(record["rewards"][0]) == 2


def test_num_candidates_needs_a_search_method(tmp_path: Path) -> None:
    argv = [*STEER, "--num-candidates", "2", "--out", str(tmp_path / "o")]
    assert cli_main(argv) == 2 and not (tmp_path / "o").exists()
