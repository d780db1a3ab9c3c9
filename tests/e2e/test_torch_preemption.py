"""Preemption, checkpoints, export and metrics in a user's own loop (issue 24 items 5 and 6):
``mpiexec -n 4 python user_loop_script.py`` (tests/e2e/user_loop_script.py) as a user runs it.

- SIGTERM to one rank: every rank stops after the same step, saves into one folder and exits
  143; launched again, ``opt.load`` continues to the end with final parameters and metrics rows
  identical to an uninterrupted run's, bit for bit;
- a DDP-style ``if rank == 0: opt.save(...)`` fails on rank 0 with a message and writes nothing;
- ``opt.export`` of a gossip method is x̄ (the average of the nodes' models) and loads into a
  fresh model;
- the ``MetricsWriter`` folders are read by ``decomp compare`` and ``decomp plot``.
Every wait is on an event (a file the script writes), not on a guessed duration.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.e2e.conftest import BIN, run_cli

SCRIPT = Path(__file__).with_name("user_loop_script.py")
STEPS = 30
TIMEOUT_S = 600


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", DECOMP_PROGRESS="0")


def _cmd(out: Path, algorithm: str, *args: str) -> list[str]:
    return [str(BIN / "mpiexec"), "-n", "4", str(BIN / "python"), str(SCRIPT), str(out),
            algorithm, str(STEPS), *args]


def launch(out: Path, algorithm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cmd(out, algorithm, *args), capture_output=True, text=True,
                          timeout=TIMEOUT_S, env=_env())


def finals(out: Path) -> list[dict[str, torch.Tensor]]:
    return [torch.load(out / "final" / f"rank{r}.pt") for r in range(4)]


def rows(out: Path) -> list[dict]:
    """The MetricsWriter's rows without the timing columns."""
    lines = (out / "run" / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")}
            for line in lines]


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory):
    """straight(algorithm): the folder of the uninterrupted run (run once per algorithm)."""
    runs: dict[str, Path] = {}

    def get(algorithm: str) -> Path:
        if algorithm not in runs:
            out = tmp_path_factory.mktemp(f"straight-{algorithm}")
            r = launch(out, algorithm)
            assert r.returncode == 0, r.stdout + r.stderr
            runs[algorithm] = out
        return runs[algorithm]

    return get


@pytest.mark.parametrize("algorithm", ["ef21", "choco"])
def test_sigterm_stops_every_rank_at_one_step_and_load_resumes_bit_for_bit(
        tmp_path: Path, straight, algorithm: str) -> None:
    out = tmp_path / "preempted"
    out.mkdir()
    pause = 12
    proc = subprocess.Popen(_cmd(out, algorithm, "--pause-at", str(pause)), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not (out / "pid").is_file() and proc.poll() is None:
            assert time.monotonic() < deadline, "rank 1 never reached the pause"
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        os.kill(int((out / "pid").read_text()), signal.SIGTERM)  # one rank only
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stdout + stderr  # 128 + SIGTERM, from every rank
    stop = pause + 1  # the vote answers one step after the signal was seen
    for r in range(4):
        assert f"rank {r}: stopped by signal 15, saved at step {stop}" in stdout, stdout
    pointer = json.loads((out / "ckpt" / "checkpoint.json").read_text())
    assert (pointer["step"], pointer["world_size"]) == (stop, 4)
    assert pointer["algorithm"] == {"ef21": "ef21", "choco": "choco_sgd"}[algorithm]
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == ["checkpoint.json", f"s{stop}"]
    assert sorted(p.name for p in (out / "ckpt" / f"s{stop}").iterdir()) == \
        [f"rank{r}.pt" for r in range(4)]
    summary = json.loads((out / "run" / "summary.json").read_text())["methods"][0]
    assert summary["status"] == "interrupted" and f"SIGTERM at step {stop}" in summary["message"]

    r = launch(out, algorithm)  # the same command again: resumes from the folder
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"rank 0: resumed at step {stop} (step {stop})" in r.stdout
    for mine, theirs in zip(finals(out), finals(straight(algorithm)), strict=True):
        assert mine.keys() == theirs.keys()
        for k in mine:  # parameters, BatchNorm statistics: identical
            assert torch.equal(mine[k], theirs[k]), k
    assert rows(out) == rows(straight(algorithm))
    assert [row["step"] for row in rows(out)] == list(range(5, STEPS + 1, 5))
    summary = json.loads((out / "run" / "summary.json").read_text())["methods"][0]
    assert (summary["status"], summary["steps"]) == ("ok", STEPS)


def test_a_rank0_only_save_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    r = launch(tmp_path, "ef21", "--rank0-save-at", "3")
    assert r.returncode != 0
    assert ("[rank 0] ERROR: uncaught ConfigError: opt.save() is collective: rank 0 called it "
            "at step 3, but ranks 1, 2, 3 did not within 5 s — nothing was written. A "
            "DDP-style `if rank == 0: opt.save(...)` cannot work") in r.stderr, r.stderr
    assert not (tmp_path / "ckpt").exists()


def test_export_of_a_gossip_method_is_the_average_and_loads_into_a_fresh_model(
        straight) -> None:
    out = straight("choco")
    nodes = finals(out)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(16, 3))
    exported = torch.load(out / "model.pt")  # weights_only: a plain state_dict
    model.load_state_dict(exported)
    weight = nodes[0]["0.weight"]
    assert not all(torch.equal(weight, n["0.weight"]) for n in nodes)  # the nodes differ
    for k, v in model.state_dict().items():
        if v.is_floating_point():  # x̄ and the mean BatchNorm statistics
            mean = torch.stack([n[k].double() for n in nodes]).mean(0)
            assert torch.allclose(v.double(), mean, rtol=1e-6, atol=1e-7), k
        else:
            assert torch.equal(v, nodes[0][k]), k
    summary = json.loads((out / "run" / "summary.json").read_text())["methods"][0]
    assert summary["family"] == "decentralized" and summary["consensus_distance"] > 0


def test_metrics_writer_folders_are_read_by_compare_and_plot(tmp_path: Path, straight) -> None:
    folders = [str(straight(a) / "run") for a in ("ef21", "choco")]
    r = run_cli(["compare", *folders, "--target", "loss<=10"])
    assert r.returncode == 0, r.stderr
    head, _, *lines = r.stdout.splitlines()
    for col in ("method", "status", "steps", "loss", "consensus_distance", "bits_up",
                "bits_down", "wall_s"):
        assert col in head.split(), head
    assert len(lines) == 2
    for line, name in zip(lines, ("ef21-topk", "choco-topk"), strict=True):
        assert name in line and " ok " in line and f" {STEPS} " in line, line
    png = tmp_path / "loss.png"
    r = run_cli(["plot", *folders, "-x", "bits", "-y", "loss", "-o", str(png)])
    assert r.returncode == 0, r.stderr
    assert png.stat().st_size > 1000
