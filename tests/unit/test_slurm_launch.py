"""Launch context: SLURM variables, the launcher guess, and the refusal of N one-rank copies."""

from __future__ import annotations

import logging

import pytest

from decomp.errors import LaunchError
from decomp.launch import (
    check_launch,
    check_script_launch,
    detect_launcher,
    singleton_problem,
    slurm_context,
)

SRUN_STEP = {"SLURM_JOB_ID": "42", "SLURM_NTASKS": "4", "SLURM_JOB_NUM_NODES": "1",
             "SLURM_JOB_NODELIST": "node1", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4",
             "SLURM_PROCID": "2"}


class FakeComm:
    """A one-rank communicator (launch_context only asks rank and size when size is 1)."""

    def Get_size(self) -> int:  # noqa: N802 (mpi4py's names)
        return 1

    def Get_rank(self) -> int:  # noqa: N802
        return 0


def test_srun_with_four_tasks_and_a_one_rank_world_is_refused() -> None:
    with pytest.raises(LaunchError) as e:
        check_launch(FakeComm(), SRUN_STEP)
    msg = str(e.value)
    assert msg.startswith("SLURM task 2: SLURM started 4 tasks in step 0 of job 42")
    assert "MPI sees a world of 1 rank" in msg and "srun --mpi=pmi2" in msg
    assert "mpiexec -n $SLURM_NTASKS" in msg and "DECOMP_ALLOW_SINGLETON=1" in msg
    assert "srun without PMI" in msg


@pytest.fixture(autouse=True)
def _propagate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let caplog see the decomp logger (setup_logging turns propagation off)."""
    monkeypatch.setattr(logging.getLogger("decomp"), "propagate", True)


def test_override_runs_the_copies_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="decomp"):
        ctx = check_launch(FakeComm(), {**SRUN_STEP, "DECOMP_ALLOW_SINGLETON": "1"})
    assert ctx.step_tasks == 4 and ctx.world_size == 1
    assert "DECOMP_ALLOW_SINGLETON=1" in caplog.text
    assert "launch: SLURM job 42 on 1 node(s) [node1], 4 task(s), step 0 runs 4 task(s)" \
        in caplog.text
    assert "launch: MPI library: " in caplog.text


@pytest.mark.parametrize(("env", "world"), [
    ({}, 1),                                              # a laptop, no launcher
    (SRUN_STEP, 4),                                       # srun --mpi=pmi2, right
    ({**SRUN_STEP, "SLURM_STEP_NUM_TASKS": "1"}, 1),      # srun -n 1 in a bigger allocation
    ({k: v for k, v in SRUN_STEP.items() if not k.startswith("SLURM_STEP")}, 1),  # batch step
])
def test_legitimate_launches_pass(env: dict[str, str], world: int) -> None:
    assert singleton_problem(slurm_context(env, world)) is None


def test_one_rank_in_the_batch_step_of_a_multi_task_job_is_refused_unless_asked(
        caplog: pytest.LogCaptureFixture) -> None:
    """N copies started by hand in a batch script would all write one run folder."""
    env = {k: v for k, v in SRUN_STEP.items() if not k.startswith("SLURM_STEP")}
    with pytest.raises(LaunchError, match="SLURM job 42 has 4 tasks but this run has 1 MPI "
                                          "rank: started without srun.*--single-rank"):
        check_launch(FakeComm(), env)
    with caplog.at_level(logging.WARNING, logger="decomp"):
        check_launch(FakeComm(), {**env, "DECOMP_ALLOW_SINGLETON": "1"})
    assert "SLURM job 42 has 4 tasks; running on 1 rank as asked" in caplog.text


def test_context_from_slurm_variables() -> None:
    env = {"SLURM_JOBID": "9", "SLURM_NPROCS": "8", "SLURM_NNODES": "2",
           "SLURM_NODELIST": "n[1-2]", "SLURM_ARRAY_JOB_ID": "5", "SLURM_ARRAY_TASK_ID": "3"}
    ctx = slurm_context(env, 8)
    assert (ctx.job_id, ctx.job_tasks, ctx.num_nodes, ctx.nodelist) == ("9", 8, 2, "n[1-2]")
    ctx.ranks_per_node = {"n1": 4, "n2": 4}
    lines = ctx.describe()
    assert lines[0] == "SLURM job 9 (array 5, task 3) on 2 node(s) [n[1-2]], 8 task(s)"
    assert lines[1].startswith("MPI world of 8 rank(s) on 2 node(s): 4 on n1, 4 on n2")
    assert slurm_context({}, 1).describe()[0] == "no SLURM job (SLURM_JOB_ID unset)"


@pytest.mark.parametrize(("env", "launcher"), [
    ({"OMPI_COMM_WORLD_SIZE": "4"}, "mpirun (Open MPI)"),
    ({"PMI_RANK": "0", "MPI_LOCALNRANKS": "4", "SLURM_STEP_ID": "1"}, "mpiexec (MPICH Hydra)"),
    ({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4", "PMI_FD": "5"}, "srun --mpi=pmi2"),
    ({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4", "PMIX_RANK": "0"}, "srun --mpi=pmix"),
    ({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4"}, "srun without PMI (--mpi=none?)"),
    ({}, "none (singleton)"),
])
def test_launcher_guess(env: dict[str, str], launcher: str) -> None:
    assert detect_launcher(env, 1 if not env else 4) == launcher


TORCHRUN = {"WORLD_SIZE": "2", "LOCAL_RANK": "0", "RANK": "0", "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def test_torchrun_around_a_one_rank_world_is_refused_naming_mpiexec() -> None:
    """torchrun --nproc-per-node 2 train.py: two one-rank trainings, refused in each."""
    with pytest.raises(LaunchError) as e:
        check_script_launch(TORCHRUN, world_size=1, argv=["train.py"])
    msg = str(e.value)
    assert msg.startswith("WORLD_SIZE=2: torchrun started 2 processes, but MPI sees a world "
                          "of 1 rank")
    assert "`mpiexec -n 2 python train.py`" in msg
    assert "`srun --mpi=pmi2 -n 2 python train.py`" in msg and "DECOMP_ALLOW_SINGLETON=1" in msg


@pytest.mark.parametrize(("name", "who"), [("OMPI_COMM_WORLD_SIZE", "mpirun (Open MPI)"),
                                           ("PMI_SIZE", "an MPI launcher (PMI")])
def test_another_mpi_librarys_launcher_is_refused(name: str, who: str) -> None:
    with pytest.raises(LaunchError) as e:
        check_script_launch({name: "4"}, world_size=1, argv=["t.py"])
    msg = str(e.value)
    assert msg.startswith(f"{name}=4: {who}")
    assert "another MPI library" in msg and "`mpiexec -n 4 python t.py`" in msg


def test_srun_without_pmi_names_the_script() -> None:
    with pytest.raises(LaunchError) as e:
        check_script_launch(SRUN_STEP, world_size=1, argv=["train.py"])
    assert "`srun --mpi=pmi2 python train.py`" in str(e.value)
    assert str(e.value).startswith("SLURM task 2: SLURM started 4 tasks in step 0")


def test_batch_step_of_a_multi_task_job_names_slurm_ntasks_for_a_script() -> None:
    env = {k: v for k, v in SRUN_STEP.items() if not k.startswith("SLURM_STEP")}
    with pytest.raises(LaunchError, match=r"SLURM_NTASKS=4.*`srun --mpi=pmi2 python x.py`.*"
                                          r"if one rank is intended, set DECOMP_ALLOW_SINGLETON=1"):
        check_script_launch(env, world_size=1, argv=["x.py"])


@pytest.mark.parametrize(("env", "world"), [
    (TORCHRUN, 2),                                        # mpiexec world that also sets WORLD_SIZE
    ({"WORLD_SIZE": "1", "PMI_SIZE": "1"}, 1),            # mpiexec -n 1 / torchrun of one
    ({"OMPI_COMM_WORLD_SIZE": "4"}, 4),                   # mpirun, right library
    ({**TORCHRUN, "DECOMP_ALLOW_SINGLETON": "1"}, 1),     # asked for
])
def test_script_launches_that_pass(env: dict[str, str], world: int) -> None:
    check_script_launch(env, world_size=world, argv=["train.py"])


def test_decomp_run_refuses_torchrun_too() -> None:
    """One implementation: ``decomp run``'s check also reads the launchers' variables."""
    with pytest.raises(LaunchError, match=r"WORLD_SIZE=2.*`mpiexec -n 2 decomp run \.\.\.`"):
        check_launch(FakeComm(), TORCHRUN)


def test_front_ends_check_the_launch_before_anything_else(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """DistributedOptimizer and Trainer refuse a torchrun launch in their constructor."""
    torch = pytest.importorskip("torch")
    from decomp.torch import DistributedOptimizer
    from decomp.torch.trainer import Trainer

    for k, v in TORCHRUN.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("DECOMP_ALLOW_SINGLETON", raising=False)
    model = torch.nn.Linear(3, 2)
    with pytest.raises(LaunchError, match="WORLD_SIZE=2: torchrun"):
        DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model)
    with pytest.raises(LaunchError, match="WORLD_SIZE=2: torchrun"):
        Trainer(model, None, None)  # type: ignore[arg-type]
