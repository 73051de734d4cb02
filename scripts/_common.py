"""Shared helpers for the training scripts (data loading, determinism, provenance)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO / "python" / "glass_core" / "data"


def load_default_module() -> ModuleType:
    """Import glass_core/digits/assets.py by path (works before the native core is built)."""
    path = REPO / "python" / "glass_core" / "digits" / "assets.py"
    spec = importlib.util.spec_from_file_location("_glass_core_default", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def seed_everything(seed: int, threads: int) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)


def load_digits_tensor() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as float32 ``[1797, 1, 8, 8]`` in ``[-1, 1]`` (ink = +1) and labels."""
    digits: tuple[torch.Tensor, torch.Tensor] = load_default_module().load_real_digits()
    return digits


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def versions() -> dict[str, str]:
    import diffusers
    import safetensors
    import sklearn

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "scikit-learn": sklearn.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }


def portable_args(args: dict[str, Any]) -> dict[str, Any]:
    """argparse values as JSON, with paths inside the repo made repo-relative."""
    out: dict[str, Any] = {}
    for k, v in args.items():
        if isinstance(v, Path):
            v = v.resolve()
            v = str(v.relative_to(REPO)) if v.is_relative_to(REPO) else str(v)
        out[k] = v
    return out


def write_provenance(out: Path, script: str, seed: int, args: dict[str, Any], **extra: Any) -> None:
    files = {
        str(p.relative_to(out)): sha256(p)
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "provenance.json"
    }
    record = {
        "script": script,
        "script_sha256": sha256(REPO / script),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "seed": seed,
        "args": portable_args(args),
        "versions": versions(),
        "machine": {
            "platform": platform.platform(),
            "cpu_count_visible": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "created_unix": int(time.time()),
        "files_sha256": files,
        **extra,
    }
    (out / "provenance.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
