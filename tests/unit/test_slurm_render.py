"""`decomp slurm`: every option lands in the script, bad values are clear errors, the rendered
scripts are valid bash that launch what they say (checked with a fake srun/mpiexec)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from decomp.cli import main
from decomp.config import load_config, parse_value
from decomp.errors import ConfigError
from decomp.slurm import (
    Source,
    check_time,
    choose_template,
    load_source,
    parse_array,
    sbatch_options,
    script_variable,
    toml_literal,
)

REPO = Path(__file__).resolve().parents[2]
EF21 = REPO / "jobs" / "configs" / "ef21_a9a.toml"
SWEEP = REPO / "jobs" / "configs" / "ef21_a9a_sweep.toml"
TEMPLATES = sorted((REPO / "jobs" / "slurm").glob("*.sbatch"))


def render(tmp_path: Path, *args: str) -> str:
    script = tmp_path / "job.sbatch"
    assert main(["slurm", *args, "--out", str(tmp_path / "runs"), "--script", str(script)]) == 0
    return script.read_text()


def error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["slurm", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("decomp slurm: ERROR: "), err
    return err


def test_every_option_lands_in_the_script(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    text = render(tmp_path, str(EF21), "--nodes", "3", "--ntasks-per-node", "5",
                  "--cpus-per-task", "2", "--time", "01:02:03", "--partition", "gpu,cpu",
                  "--account", "proj-1", "--job-name", "my.job", "--output", "/x/%x-%j.log",
                  "--sbatch=--qos=debug", "--sbatch=--exclusive", "--set", "run.log_every=7",
                  "--steps", "42", "--data-dir", str(tmp_path), "--launcher", "mpiexec",
                  "--mpi", "pmix", "--venv", str(venv), "--module", "openmpi/4.1",
                  "--module", "python/3.11", "--template", "master_worker")
    opts = sbatch_options(text)
    assert opts == {"job-name": "my.job", "nodes": "3", "ntasks-per-node": "5",
                    "cpus-per-task": "2", "time": "01:02:03", "output": "/x/%x-%j.log",
                    "partition": "gpu,cpu", "account": "proj-1", "qos": "debug",
                    "exclusive": "",
                    # checkpoint near the time limit, requeue, append to the log when requeued
                    "signal": "B:USR1@120", "requeue": "", "open-mode": "append"}
    assert script_variable(text, "CONFIG") == str(EF21)
    assert script_variable(text, "OUT") == str(tmp_path / "runs")
    assert shlex.split(script_variable(text, "RUN_ARGS").strip("()")) == [
        "--set", "run.log_every=7", "--set", "run.steps=42", "--data-dir", str(tmp_path)]
    assert script_variable(text, "VENV") == str(venv)
    assert script_variable(text, "MODULES") == "(openmpi/4.1 python/3.11)"
    assert script_variable(text, "LAUNCHER") == "mpiexec"
    assert script_variable(text, "SRUN_MPI") == "pmix"
    assert text.startswith("#!/bin/bash\n# Written by `decomp slurm ")
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


def test_defaults_keep_the_template_and_use_absolute_paths(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DECOMP_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    text = render(tmp_path, str(EF21))
    opts = sbatch_options(text)
    assert opts["nodes"] == "1" and opts["ntasks-per-node"] == "4" and opts["time"] == "00:30:00"
    assert opts["job-name"] == "decomp-ef21-a9a"
    assert opts["output"] == str(tmp_path / "runs" / "slurm" / "%x-%j.out")
    assert "partition" not in opts and "##SBATCH --partition=compute" in text
    assert script_variable(text, "LAUNCHER") == "srun"
    assert script_variable(text, "SRUN_MPI") == "pmi2"
    assert script_variable(text, "RUN_ARGS") == "()"
    assert Path(script_variable(text, "VENV")).is_absolute()
    assert (tmp_path / "runs" / "slurm").is_dir()  # sbatch does not create the log directory


def test_decomp_data_is_passed_when_the_config_has_no_data_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DECOMP_DATA", str(tmp_path))
    text = render(tmp_path, str(EF21))
    assert script_variable(text, "RUN_ARGS") == f"(--data-dir {tmp_path})"


def test_default_script_path_and_summary(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["slurm", str(EF21), "--out", str(tmp_path), "--ntasks-per-node", "2"]) == 0
    out = capsys.readouterr().out
    script = tmp_path / "slurm" / "decomp-ef21-a9a.sbatch"
    assert f"wrote {script}" in out and f"sbatch {script}" in out
    assert "1 node(s) x 2 task(s) per node" in out and "srun --mpi=pmi2" in out
    assert os.access(script, os.X_OK)


def test_script_to_stdout(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["slurm", str(EF21), "--out", str(tmp_path), "--script", "-"]) == 0
    assert sbatch_options(capsys.readouterr().out)["job-name"] == "decomp-ef21-a9a"


@pytest.mark.parametrize(("args", "message"), [
    (["--nodes", "0"], "--nodes must be a positive integer, got 0"),
    (["--ntasks-per-node", "-2"], "--ntasks-per-node must be a positive integer, got -2"),
    (["--cpus-per-task", "0"], "--cpus-per-task must be a positive integer"),
    (["--time", "1:2:3:4"], "--time '1:2:3:4' is not a SLURM time limit: use HH:MM:SS"),
    (["--time", "1h"], "is not a SLURM time limit"),
    (["--time", "00:61:00"], "is not a SLURM time limit"),
    (["--time", "1-25:00:00"], "is not a SLURM time limit"),
    (["--time", "00:00:00"], "the time limit must be positive"),
    (["--partition", "two words"], "--partition 'two words': use letters, digits"),
    (["--account", "a;rm"], "--account 'a;rm'"),
    (["--job-name", "x y"], "--job-name 'x y'"),
    (["--mpi", "PMI 2"], "--mpi 'PMI 2': a plugin name"),
    (["--array", "0-3"], "--array runs one task per sweep setting"),
    (["--sbatch", "qos=x"], "--sbatch 'qos=x': give one sbatch option as --key=value"),
    (["--steps", "-1"], "--steps must be >= 0"),
    (["--set", "run.stepz=3"], "unknown config key 'run.stepz'; did you mean 'steps'?"),
    (["--template", "nope"], "no SLURM template 'nope'"),
    (["--template", "sweep"], "is a sweep: give --sweep"),
    (["--sweep", "seed"], "--sweep expects KEY=[v1, v2, ...]"),
    (["--sweep", "seed=3"], "expected a non-empty array"),
    (["--sweep", "seed=[1, 2"], "is not a TOML array"),
    (["--sweep", "run.stepz=[1, 2]"], "unknown config key 'run.stepz'"),
    (["--sweep", "seed=[0, 1]", "--array", "0-2"], "task id(s) 2 have no sweep setting"),
    (["--sweep", "seed=[0, 1]", "--array", "a-b"], "is not an array spec"),
    (["--sweep", "seed=[0, 1]", "--array", "1-0"], "is empty"),
    (["--sweep", "seed=[0, 1]", "--array", "0-1%0"], "the limit after % must be"),
])
def test_bad_values_are_clear_errors(args: list[str], message: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    err = error(capsys, str(EF21), "--out", str(tmp_path), *args)
    assert message in err
    assert not (tmp_path / "slurm").exists()  # nothing written


def test_missing_config_and_non_integer_nodes(capsys: pytest.CaptureFixture[str]) -> None:
    assert "config file 'no/such.toml' not found" in error(capsys, "no/such.toml")
    with pytest.raises(SystemExit) as e:
        main(["slurm", str(EF21), "--nodes", "two"])
    assert e.value.code == 2 and "invalid int value: 'two'" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["30", "10:00", "00:30:00", "100:00:00", "2-0", "1-12:30",
                                   "1-12:30:00"])
def test_slurm_time_forms(value: str) -> None:
    assert check_time(value) == value


def test_array_specs() -> None:
    assert parse_array("0-5") == [0, 1, 2, 3, 4, 5]
    assert parse_array("0,2,4") == [0, 2, 4]
    assert parse_array("0-9:3%2") == [0, 3, 6, 9]
    with pytest.raises(ConfigError):
        parse_array("-1")


@pytest.mark.parametrize("value", [3, -1.5, 1e-5, 0.1, True, "top k", {"kind": "topk", "k": 1},
                                   [1, 2], {"a b": {"c": [1.0, "x"]}}])
def test_toml_literal_round_trips_through_set(value: object) -> None:
    assert parse_value(toml_literal(value)) == value


def test_sweep_file_renders_the_array_table(tmp_path: Path) -> None:
    text = render(tmp_path, str(SWEEP), "--ntasks-per-node", "2")
    opts = sbatch_options(text)
    assert opts["array"] == "0-5" and opts["job-name"] == "decomp-ef21-a9a-sweep"
    assert opts["output"].endswith("/%x-%A_%a.out")
    assert script_variable(text, "SWEEP_NAME") == "ef21-a9a-sweep"
    assert script_variable(text, "CONFIG") == str(EF21)
    table = text.split("# >>> sweep table\n")[1].split("# <<< sweep table")[0]
    rows = [r for r in table.splitlines() if "SETTING=" in r]
    assert len(rows) == 6
    assert rows[1].strip() == ("1) SETTING=(--set methods.0.lr_multiplier=4 --set "
                               "'methods.0.compressor={kind = \"topk\", k = 8}') ;;")
    assert "(the table has 0-5)" in table


def test_sweep_flags_add_axes_and_each_setting_is_a_valid_config(tmp_path: Path) -> None:
    src = load_source(EF21, ["methods.0.lr_multiplier=[1, 2]", 'problem.scale=["none", "maxabs"]'])
    settings = src.settings()
    assert settings == [["methods.0.lr_multiplier=1", 'problem.scale="none"'],
                        ["methods.0.lr_multiplier=1", 'problem.scale="maxabs"'],
                        ["methods.0.lr_multiplier=2", 'problem.scale="none"'],
                        ["methods.0.lr_multiplier=2", 'problem.scale="maxabs"']]
    # a grid from the command line has a name of its own: two grids never share a script or
    # outputs folder (nor does it clash with the sweep file's "ef21-a9a-sweep")
    other = load_source(EF21, ["methods.0.lr_multiplier=[1, 4]"])
    assert src.sweep_name.startswith("ef21-a9a-sweep-") and other.sweep_name.startswith(
        "ef21-a9a-sweep-") and src.sweep_name != other.sweep_name
    assert load_source(EF21, ["methods.0.lr_multiplier=[1, 2]", 'problem.scale=["none", '
                              '"maxabs"]']).sweep_name == src.sweep_name  # repeatable
    cfg = load_config(EF21, settings[3])
    assert cfg.methods[0].lr_multiplier == 2 and cfg.problem.scale == "maxabs"
    text = render(tmp_path, str(EF21), "--sweep", "seed=[0, 1, 2]", "--array", "0-2%1")
    assert sbatch_options(text)["array"] == "0-2%1"


def test_bad_sweep_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "s.toml"
    bad.write_text(f'config = "{EF21}"\nnmae = "x"\n[grid]\nseed = [1]\n')
    assert "unknown sweep key(s) nmae" in error(capsys, str(bad))
    bad.write_text(f'config = "{EF21}"\n[grid]\nseed = []\n')
    assert "grid key 'seed' needs a non-empty array" in error(capsys, str(bad))
    bad.write_text('config = "missing.toml"\n[grid]\nseed = [1]\n')
    assert "missing.toml' not found" in error(capsys, str(bad))


def test_template_choice() -> None:
    def src(raw: dict, grid: dict | None = None) -> Source:
        return Source(EF21, raw, grid=grid or {})

    assert choose_template(src({"methods": [{"algorithm": "ef21"}]})) == "master_worker"
    assert choose_template(src({"methods": [{"algorithm": "choco_sgd"}]})) == "decentralized"
    assert choose_template(src({"topology": {"kind": "ring"}})) == "decentralized"
    assert choose_template(src({"methods": [{"algorithm": "dcd_psgd"}]})) == "decentralized"
    assert choose_template(src({"problem": {"model": "mlp"}, "methods": []})) == "torch"
    assert choose_template(src({"problem": {"dataset": "mnist1d"}})) == "torch"
    assert choose_template(src({}, {"seed": [1, 2]})) == "sweep"


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_templates_are_complete_job_scripts(template: Path) -> None:
    text = template.read_text()
    assert subprocess.run(["bash", "-n", str(template)]).returncode == 0
    opts = sbatch_options(text)
    for key in ("job-name", "nodes", "ntasks-per-node", "cpus-per-task", "time", "output"):
        assert key in opts, f"{template.name}: no #SBATCH --{key}"
    assert "##SBATCH --partition=" in text
    for var in ("CONFIG", "OUT", "RUN_ARGS", "VENV", "MODULES", "LAUNCHER", "SRUN_MPI"):
        assert script_variable(text, var) is not None, f"{template.name}: no {var}="
    assert "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}" in text
    assert 'launch=(srun --mpi="$SRUN_MPI" --kill-on-bad-exit=1)' in text
    assert 'launch=(mpiexec -n "$SLURM_NTASKS")' in text
    assert '"${launch[@]}" decomp run "$CONFIG"' in text
    assert script_variable(text, "CONFIG").startswith("jobs/configs/")


FAKE_LAUNCHER = """#!/bin/bash
echo "LAUNCH $(basename "$0") $* | OMP=$OMP_NUM_THREADS SRUN_CPUS=$SRUN_CPUS_PER_TASK"
"""


#: the job id of the scripts run here: above SLURM's default MaxJobId (67043328), so the
#: scripts' clean-up of their job's MPI shared memory in /dev/shm never meets a real job's
FAKE_JOB = "99999999"


def _run_rendered(tmp_path: Path, text: str, env: dict[str, str], *args: str) -> str:
    """Execute a rendered script with fake srun/mpiexec/module that print their arguments."""
    fake = tmp_path / "fakebin"
    fake.mkdir(exist_ok=True)
    for name in ("srun", "mpiexec"):
        (fake / name).write_text(FAKE_LAUNCHER)
        (fake / name).chmod(0o755)
    script = tmp_path / "run.sbatch"
    script.write_text(text)
    full = {"PATH": f"{fake}:/usr/bin:/bin", "SLURM_JOB_ID": FAKE_JOB, "SLURM_NTASKS": "6",
            "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "n[1-2]",
            "SLURM_CPUS_PER_TASK": "3", **env}
    r = subprocess.run(["bash", str(script), *args], env=full, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("launcher", ["srun", "mpiexec"])
def test_rendered_script_launches_decomp(tmp_path: Path, launcher: str) -> None:
    text = render(tmp_path, str(EF21), "--launcher", launcher, "--venv", "", "--steps", "9")
    out = _run_rendered(tmp_path, text, {})
    line = next(s for s in out.splitlines() if s.startswith("LAUNCH"))
    head = ("LAUNCH srun --mpi=pmi2 --kill-on-bad-exit=1" if launcher == "srun"
            else "LAUNCH mpiexec -n 6")
    assert line.startswith(f"{head} decomp run {EF21} --out {tmp_path / 'runs'} "
                           "--set run.steps=9")
    assert line.endswith("| OMP=3 SRUN_CPUS=3")
    assert f"decomp job {FAKE_JOB} on n[1-2]: 2 node(s), 6 task(s), 3 thread(s) per task" in out
    assert "exit status 0" in out
    # a config given to sbatch as the script's argument replaces CONFIG; more args go to decomp
    out = _run_rendered(tmp_path, text, {}, "other.toml", "--steps", "3")
    assert "decomp run other.toml --out" in out and out.split("|")[0].rstrip().endswith("--steps 3")


def test_rendered_sweep_runs_the_setting_of_its_array_task(tmp_path: Path) -> None:
    text = render(tmp_path, str(SWEEP), "--venv", "")
    out = _run_rendered(tmp_path, text, {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_JOB_ID": "7"})
    line = next(s for s in out.splitlines() if s.startswith("LAUNCH"))
    assert (f"decomp run {EF21} --out {tmp_path / 'runs' / 'ef21-a9a-sweep'} --set name=\"3\" "
            "--set methods.0.lr_multiplier=16 --set methods.0.compressor={kind = \"topk\", k = 8}"
            ) in line
    fake = tmp_path / "run.sbatch"
    r = subprocess.run(["bash", str(fake)], env={"PATH": "/usr/bin:/bin",
                                                 "SLURM_ARRAY_TASK_ID": "6"},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "no sweep setting for array task 6 (the table has 0-5)" in r.stderr


def test_decentralized_config_gets_the_decentralized_template(tmp_path: Path) -> None:
    text = render(tmp_path, str(REPO / "jobs" / "configs" / "decentralized.toml"))
    assert "decentralized methods (D-PSGD" in text
    assert sbatch_options(text)["ntasks-per-node"] == "8"
    assert script_variable(text, "CONFIG") == str(REPO / "jobs/configs/decentralized.toml")


def _fnv1a_32(text: str) -> int:
    """32-bit FNV-1a, written here again (not decomp.launch's): MPICH's world id hash."""
    h = 2166136261
    for byte in text.encode():
        h = ((h ^ byte) * 16777619) % 2**32
    return h


def _pmi_id(plugin: str, job: str, step: int) -> str:
    """The PMI job id MPICH hashes under `srun --mpi=PLUGIN`: SLURM's pmi2 plugin sets
    PMI_JOBID=<job>.<step>; its pmix plugin names the PMIx namespace slurm.pmix.<job>.<step>
    (src/plugins/mpi/pmix/pmixp_info.c; seen as PMIX_NAMESPACE in a task of the local SLURM)."""
    return f"slurm.pmix.{job}.{step}" if plugin.startswith("pmix") else f"{job}.{step}"


def _segments(plugin: str, job: str, step: int) -> list[str]:
    """MPICH 4.1-5.0 hash the id; later MPICH hash "<id>-1" (the init count appended)."""
    ids = (_pmi_id(plugin, job, step), _pmi_id(plugin, job, step) + "-1")
    return [f"mpich_{kind}_{_fnv1a_32(i):x}" for i in ids for kind in ("shm", "vci")]


SHM_BLOCK = re.compile(r"^# ---- MPI shared memory left by an earlier run of this job ----\n"
                       r".*?^fi\n", re.MULTILINE | re.DOTALL)
ALL_TEMPLATES = [*TEMPLATES, REPO / "jobs" / "slurm" / "script" / "torch_script.sbatch"]


def test_every_template_has_the_same_shared_memory_clean_up() -> None:
    """Each template stands alone (sbatch runs a copy of it from SLURM's spool directory, and
    users copy one template): the clean-up is repeated in each, and must not drift."""
    blocks = {t.name: SHM_BLOCK.search(t.read_text()) for t in ALL_TEMPLATES}
    assert all(blocks.values()), [name for name, m in blocks.items() if not m]
    assert len({m[0] for m in blocks.values() if m}) == 1


@pytest.mark.parametrize("plugin", ["pmi2", "pmix", "pmix_v4", "none"])
def test_the_segment_names_follow_the_srun_plugin(plugin: str) -> None:
    """The template's mpich_segments (bash) against MPICH's naming computed here."""
    block = SHM_BLOCK.search(TEMPLATES[0].read_text())
    assert block
    function = block[0][block[0].index("mpich_segments() {"):block[0].index("\n}\n") + 3]
    r = subprocess.run(["bash", "-c", f"{function}\nmpich_segments 123456 {plugin}"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    want = [f"/dev/shm/{name}_*" for step in range(16)
            for name in _segments(plugin, "123456", step)]
    assert r.stdout.split() == want


@pytest.mark.parametrize("plugin", ["pmi2", "pmix"])
@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_a_script_removes_mpi_shared_memory_left_by_its_job(tmp_path: Path,
                                                            template: Path, plugin: str) -> None:
    """MPICH names its start-up segment after the PMI job id (32-bit FNV-1a), which a
    requeued job repeats: the script removes its own job's (steps 0-15) under the plugin it
    launches with, no other job's."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm")
    ours = [shm / f"{_segments(plugin, FAKE_JOB, s)[0]}_0" for s in (0, 1, 15)]
    ours.append(shm / f"{_segments(plugin, FAKE_JOB, 0)[1]}_1")  # mpich_vci_, node 1
    ours.append(shm / f"{_segments(plugin, FAKE_JOB, 2)[2]}_0")  # a later MPICH's "<id>-1"
    other_plugin = "pmix" if plugin == "pmi2" else "pmi2"
    others = [shm / f"{_segments(plugin, FAKE_JOB, 16)[0]}_0",  # not a step it would run
              shm / f"{_segments(other_plugin, FAKE_JOB, 0)[0]}_0"]  # not its plugin's name
    try:
        for path in (*ours, *others):
            path.write_bytes(b"\0" * 64)
        text = render(tmp_path, str(SWEEP if template.stem == "sweep" else EF21), "--venv", "",
                      "--template", str(template), "--mpi", plugin)
        env = {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_JOB_ID": "7"}
        out = _run_rendered(tmp_path, text, env)
        assert not any(p.exists() for p in ours) and all(p.exists() for p in others)
        for path in ours:
            assert f"decomp job {FAKE_JOB}: removing {path} (left by an earlier run)" in out
        assert "LAUNCH srun --nodes" not in out  # a first start: no clean-up step
        # after a requeue, a job of several nodes cleans every node in a step of its own
        out = _run_rendered(tmp_path, text, {**env, "SLURM_RESTART_COUNT": "1"})
        [line] = [s for s in out.splitlines() if s.startswith("LAUNCH srun --nodes")]
        assert line.startswith("LAUNCH srun --nodes=2 --ntasks=2 --ntasks-per-node=1 "
                               "--cpus-per-task=1 --mpi=none bash -c rm -f $1 _ "
                               f"/dev/shm/{_segments(plugin, FAKE_JOB, 0)[0]}_* ")
        assert "--resume auto" in out
    finally:
        for path in (*ours, *others):
            path.unlink(missing_ok=True)
