"""Run a test body on several gloo ranks in fresh processes (torch.multiprocessing.spawn)."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(
    rank: int, body: Callable[..., None], world: int, port: int, args: tuple[Any, ...]
) -> None:
    body(rank, world, port, *args)  # an assertion error propagates: spawn reports it
    if dist.is_initialized():
        dist.destroy_process_group()
    # The body passed. Skip interpreter finalisation: gloo's C++ threads can abort there
    # ("terminate called without an active exception", SIGABRT) after a clean run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def spawn(body: Callable[..., None], world: int, *args: Any) -> None:
    """body(rank, world, port, *args) on `world` processes; raises if any rank fails."""
    mp.spawn(_run, args=(body, world, free_port(), args), nprocs=world, join=True)
