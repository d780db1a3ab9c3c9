"""The bad-input cases of the fault catalogue (docs/reliability.md, "Bad input"), as data.

Each :class:`Case` is one thing a user could get wrong, run as the user would: ``run`` under
``mpiexec -n 2 decomp run`` in a subprocess, ``sim`` as ``decomp sim ... --workers 2`` in this
process (no MPI needed to reach the check). ``expect`` is a stable substring of the first line
of the error message. Files the cases point at are made by :func:`make_files` in the test's
working directory.
"""

from __future__ import annotations

import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BASE = """
name = "fault"
[problem]
dataset = "breast_cancer"
scale = "standard"
[run]
steps = 5
log_every = 5
[[methods]]
algorithm = "ef21"
compressor = { kind = "topk", k = 1 }
lr = "theory"
"""

DECENTRALIZED = """
name = "fault-dec"
[problem]
dataset = "breast_cancer"
scale = "standard"
[run]
steps = 5
log_every = 5
[topology]
kind = "ring"
[[methods]]
algorithm = "choco_sgd"
compressor = { kind = "topk", k = 2 }
lr = 0.1
consensus_step = 0.5
"""

TORCH = """
name = "fault-torch"
[problem]
kind = "torch"
model = "mlp"
model_options = { hidden = [8] }
dataset = "synthetic"
[run]
steps = 4
log_every = 2
[[methods]]
algorithm = "ef21"
compressor = { kind = "topk", k = 4 }
lr = 0.1
"""

CONFIGS = {"base": BASE, "dec": DECENTRALIZED, "torch": TORCH}


@dataclass(frozen=True)
class Case:
    """id: test id and docs row; how: run | sim; sets: --set overrides; expect: substring of
    the first error line; code: exit code; config: which TOML (CONFIGS) is written to
    cfg.toml; path: run this config path instead (a file made by make_files); args: extra
    command-line arguments; what: the docs' description of the case."""

    id: str
    how: str
    expect: str
    what: str
    sets: tuple[str, ...] = ()
    code: int = 1
    config: str = "base"
    path: str | None = None
    args: tuple[str, ...] = field(default=())


CASES = [
    # --- config values ------------------------------------------------------------------
    Case("lr_multiplier_negative", "run", "lr_multiplier must be a finite number > 0",
         "`lr_multiplier = -8`", ("methods.0.lr_multiplier=-8",)),
    Case("lr_multiplier_zero", "sim", "lr_multiplier must be a finite number > 0",
         "`lr_multiplier = 0`", ("methods.0.lr_multiplier=0",)),
    Case("lr_nan", "run", "lr must be a finite number > 0", "`lr = nan`",
         ("methods.0.lr=nan",)),
    Case("lr_inf", "sim", "lr must be a finite number > 0", "`lr = inf`",
         ("methods.0.lr=inf",)),
    Case("lr_unknown_word", "sim", "lr must be a number > 0, 'theory' or '1/L'",
         "`lr = \"fast\"`", ('methods.0.lr="fast"',)),
    Case("loss_blowup_zero", "run", "run.loss_blowup must be > 1", "`run.loss_blowup = 0`",
         ("run.loss_blowup=0",)),
    Case("loss_blowup_nan", "sim", "run.loss_blowup must be > 1", "`run.loss_blowup = nan`",
         ("run.loss_blowup=nan",)),
    Case("seed_negative", "run", "seed must be an integer >= 0", "`seed = -1`",
         ("seed=-1",)),
    Case("steps_not_int", "sim", "config key 'run.steps' must be int", "`run.steps = \"ten\"`",
         ('run.steps="ten"',)),
    Case("log_every_zero", "sim", "run.log_every must be >= 1", "`run.log_every = 0`",
         ("run.log_every=0",)),
    Case("batch_size_zero", "sim", "batch_size must be >= 1", "`batch_size = 0`",
         ("methods.0.batch_size=0",)),
    Case("master_unknown", "sim", "run.master must be one of shared, dedicated",
         "`run.master = \"boss\"`", ('run.master="boss"',)),
    Case("workers_zero", "sim", "run.workers must be >= 1", "`run.workers = 0`",
         ("run.workers=0",)),
    Case("fail_step_negative", "sim", "run.fail_step must be a step >= 1",
         "`run.fail_step = -1`", ("run.fail_step=-1",)),
    Case("lam_negative", "sim", "problem.lam must be a finite number >= 0", "`problem.lam = -1`",
         ("problem.lam=-1",)),
    Case("scale_unknown", "sim", "problem.scale must be one of none, standard, maxabs",
         "`problem.scale = \"zscore\"`", ('problem.scale="zscore"',)),
    Case("shard_unknown", "sim", "problem.shard must be one of contiguous, iid",
         "`problem.shard = \"random\"` (numpy problem)", ('problem.shard="random"',)),
    Case("n_samples_zero", "sim", "problem.n_samples must be >= 1",
         "synthetic `n_samples = 0`", ('problem.dataset="synthetic"', "problem.n_samples=0")),
    Case("n_features_negative", "sim", "problem.n_features must be >= 1",
         "synthetic `n_features = -3`", ('problem.dataset="synthetic"',
                                          "problem.n_features=-3")),
    Case("dtype_float16", "sim", "problem.dtype must be float64 or float32",
         "`problem.dtype = \"float16\"`", ('problem.dtype="float16"',)),
    Case("algorithm_unknown", "sim", "unknown algorithm 'ef22'", "`algorithm = \"ef22\"`",
         ('methods.0.algorithm="ef22"',)),
    Case("compressor_unknown", "sim", "unknown compressor 'topq'", "`compressor.kind = \"topq\"`",
         ('methods.0.compressor={kind="topq"}',)),
    Case("topk_k_above_d", "run", "TopK k=1000 exceeds the vector length d=30",
         "Top-k with k > d (checked once d is known)",
         ('methods.0.compressor={kind="topk",k=1000}',)),
    Case("key_typo", "sim", "unknown config key 'run.stepz'; did you mean 'steps'?",
         "a misspelt key", ("run.stepz=3",)),
    Case("x0_unknown_word", "sim", "run.x0 must be one of zeros, normal, model",
         "`run.x0 = \"ones\"`", ('run.x0="ones"',)),
    Case("sim_workers_zero", "sim", "need at least one worker, got 0", "`decomp sim --workers 0`",
         args=("--workers", "0")),
    # --- files a config points at -------------------------------------------------------
    Case("config_is_directory", "run", "is a directory: give the path of a .toml file",
         "the config path is a directory", path="adir"),
    Case("config_missing", "sim", "config file 'nope.toml' not found", "a missing config file",
         path="nope.toml"),
    Case("config_invalid_toml", "sim", "invalid TOML", "a config that is not TOML",
         path="broken.toml"),
    Case("config_not_utf8", "run", "is not UTF-8 text", "a binary file as the config",
         path="binary.toml"),
    Case("config_is_fifo", "run", "is not a regular file", "a named pipe as the config "
         "(reading it would block)", path="pipe.toml"),
    Case("data_dir_missing", "run", "data_dir 'no-such-dir' does not exist",
         "`--data-dir` that does not exist", args=("--data-dir", "no-such-dir")),
    Case("data_dir_is_file", "sim", "is a file, not a directory", "`data_dir` naming a file",
         ('data_dir="x0_nan.npy"',)),
    Case("x0_complex", "run", "holds complex numbers", "`run.x0` .npy of complex numbers",
         ('run.x0="x0_complex.npy"',)),
    Case("x0_two_dimensional", "sim", "must be a 1-D vector", "`run.x0` .npy of shape (30, 1)",
         ('run.x0="x0_2d.npy"',)),
    Case("x0_wrong_length", "sim", "has shape (5,), the model needs (30,)",
         "`run.x0` .npy of the wrong length (checked once d is known)",
         ('run.x0="x0_short.npy"',)),
    Case("x0_nan", "sim", "non-finite entries (first x0[3] = nan)", "`run.x0` .npy with NaN",
         ('run.x0="x0_nan.npy"',)),
    Case("x0_not_npy", "sim", "cannot read 'x0_garbage.npy'", "`run.x0` that is not a .npy file",
         ('run.x0="x0_garbage.npy"',)),
    Case("x0_missing", "sim", "cannot read 'x0_absent.npy' (No such file or directory)",
         "`run.x0` file missing", ('run.x0="x0_absent.npy"',)),
    # --- datasets -----------------------------------------------------------------------
    Case("libsvm_nan_feature", "run",
         "LIBSVM file nan.svm: 2 non-finite feature value(s), the first at sample 1, feature 1",
         "LIBSVM file with NaN/inf features", ('problem.dataset="nan.svm"',)),
    Case("libsvm_inf_label", "sim", "label of sample 2 (0-based) is inf",
         "LIBSVM file with an infinite label", ('problem.dataset="inflabel.svm"',)),
    Case("libsvm_unparsable", "sim", "cannot read LIBSVM file garbage.svm",
         "LIBSVM file with a non-numeric label", ('problem.dataset="garbage.svm"',)),
    Case("libsvm_three_labels", "sim", "has 3 distinct labels", "three classes for logistic",
         ('problem.dataset="labels3.svm"',)),
    Case("libsvm_huge_index_dense", "sim", "would make the sparse 4 x 2000000000 feature matrix "
         "dense", "a stray feature index 2e9 with `scale = \"standard\"`",
         ('problem.dataset="bigidx.svm"',)),
    Case("dataset_missing", "sim", "dataset 'no_such_set' not found", "an unknown dataset name",
         ('problem.dataset="no_such_set"',)),
    Case("batch_larger_than_shard", "run", "batch_size = 100000 does not fit worker",
         "`batch_size` larger than a worker's shard", ("methods.0.batch_size=100000",)),
    # --- topology (decentralized) -------------------------------------------------------
    Case("w_negative_entry", "run", "W has a negative entry: W[0,1]=-0.5",
         "a W file with negative entries", ('topology.kind="w_negative.npy"',), config="dec"),
    Case("w_complex", "sim", "W has complex entries (dtype complex128): a mixing matrix is real",
         "a W file of complex numbers (imaginary parts 0)", ('topology.kind="w_complex.npy"',),
         config="dec"),
    Case("topology_options_type", "sim", "config key 'topology.options' must be dict",
         "`topology.options = 5`", ("topology.options=5",), config="dec"),
    Case("topology_option_unknown", "sim", "unknown option 'degree' for graph 'ring'",
         "an option the graph does not take", ("topology.options={degree=3}",), config="dec"),
    Case("topology_weights_unknown", "sim", "unknown weights 'heaviest'",
         "`topology.weights = \"heaviest\"`", ('topology.weights="heaviest"',), config="dec"),
    # --- torch problems -----------------------------------------------------------------
    Case("torch_model_typo", "sim", "unknown model 'mpl'; did you mean 'mlp'?",
         "`problem.model = \"mpl\"` (before data is loaded)", ('problem.model="mpl"',),
         config="torch"),
    Case("torch_hidden_negative", "sim", "hidden must be a list of layer widths",
         "`model_options = {hidden = [-5]}`", ("problem.model_options={hidden=[-5]}",),
         config="torch"),
    Case("torch_n_samples_negative", "sim", "n_samples must be an integer >= 2",
         "`dataset_options = {n_samples = -4}`", ("problem.dataset_options={n_samples=-4}",),
         config="torch"),
    Case("cifar_nested_shared_pickle", "run", "data_batch_1: restricted unpickler: the "
         "structure expands to more than", "a CIFAR-10 batch of nested shared references "
         "(`a = [b, b]` 30 times: 268 bytes, 2**30 entries as a tree)",
         ('problem.dataset="cifar10"', 'data_dir="cifar"',
          "problem.dataset_options={train_batches=1}"), config="torch"),
    Case("torch_batch_larger_than_shard", "sim", "fewer than the largest [[methods]] batch_size",
         "torch `batch_size` larger than a shard", ("methods.0.batch_size=100000",),
         config="torch"),
]


def make_files(d: Path) -> None:
    """Every file the cases point at, in directory ``d``."""
    (d / "adir").mkdir()
    (d / "broken.toml").write_text('name = "x"\n[problem\n')
    (d / "binary.toml").write_bytes(b"\xff\xfe\x00binary")
    os.mkfifo(d / "pipe.toml")
    np.save(d / "x0_complex.npy", np.ones(30, complex))
    np.save(d / "x0_2d.npy", np.ones((30, 1)))
    np.save(d / "x0_short.npy", np.ones(5))
    np.save(d / "x0_nan.npy", np.where(np.arange(30) == 3, np.nan, 1.0))
    (d / "x0_garbage.npy").write_bytes(b"not a numpy file")
    rows = "1 1:0.5 2:1\n-1 1:1 2:2\n1 1:2 2:1\n-1 1:3 2:0.5\n" * 4
    (d / "nan.svm").write_text(rows.replace("-1 1:1 2:2", "-1 1:1 2:nan", 1)
                               .replace("1 1:2 2:1", "1 1:2 2:inf", 1))
    (d / "inflabel.svm").write_text(rows.replace("1 1:2 2:1", "inf 1:2 2:1", 1))
    (d / "garbage.svm").write_text(rows.replace("-1 1:3", "bad 1:3", 1))
    (d / "labels3.svm").write_text(rows.replace("1 1:2 2:1", "3 1:2 2:1"))
    (d / "bigidx.svm").write_text("1 1:0.5\n-1 1:1\n1 2000000000:1\n-1 1:2\n")
    np.save(d / "w_negative.npy", np.array([[1.5, -0.5], [-0.5, 1.5]]))
    np.save(d / "w_complex.npy", np.full((2, 2), 0.5 + 0j))
    cifar = d / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    (cifar / "data_batch_1").write_bytes(nested_shared_pickle(30))
    (cifar / "test_batch").write_bytes(nested_shared_pickle(30))


# --- wire-format and pickle inputs (the Python API) ------------------------------------------

def nested_shared_pickle(levels: int = 30) -> bytes:
    """A CIFAR-like batch whose ``data`` is ``a = [b, b]`` nested ``levels`` times: a few
    hundred bytes (the pickle memo shares b), 2**levels entries written out as a tree."""
    a: list = []
    for _ in range(levels):
        a = [a, a]
    return pickle.dumps({b"data": a, b"labels": [0]}, protocol=2)


def huge_bytes_pickle() -> bytes:
    """A protocol-4 pickle declaring a 1 TiB bytes object (BINBYTES8) followed by 2 bytes."""
    return b"\x80\x04" + b"\x8e" + struct.pack("<Q", 1 << 40) + b"xx."


def self_containing_pickle() -> bytes:
    a: list = []
    a.append(a)
    return pickle.dumps({b"data": a, b"labels": [0]}, protocol=2)
