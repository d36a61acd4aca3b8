"""The token-level PPO learner on a tiny model, built in-process (no Ray cluster)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks import gpu_check

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_skips_without_cuda_and_exits_zero():
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py")],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "skipped" in done.stdout and "CUDA" in done.stdout


def test_gpu_check_names_a_missing_package_and_counts_failures(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gpu_check, "CHECKS", {})
    gpu_check.check("needs_missing", packages=("no_such_package_xyz",))(lambda context: {})
    gpu_check.check("two_gpus", min_gpus=2)(lambda context: {})
    gpu_check.check("broken")(lambda context: 1 / 0)
    gpu_check.check("fine")(lambda context: {"figure": 0.5})
    context = gpu_check.Context(model_dir=str(tmp_path), num_gpus=1, work_dir=tmp_path)
    assert gpu_check.run_checks(context, list(gpu_check.CHECKS)) == 1
    out = capsys.readouterr().out
    assert "needs_missing: skipped: no_such_package_xyz not installed" in out
    assert "two_gpus: skipped: needs 2 GPUs, 1 visible" in out
    assert "broken: FAILED" in out and "ZeroDivisionError" in out
    assert "fine: figure = 0.5" in out and "fine: ok" in out
