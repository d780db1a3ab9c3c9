"""SLURM batch scripts from the templates in ``jobs/slurm/``: validation, rendering, submission.

A template is a working sbatch script (a user may copy and edit it by hand). Rendering changes
three kinds of lines and nothing else:

* ``#SBATCH --key=value`` lines (a commented ``##SBATCH --key=...`` line is switched on; an
  option the template lacks is added after its last ``#SBATCH`` line);
* the settings block, lines ``NAME=value  # comment`` (``CONFIG``, ``OUT``, ``RUN_ARGS``,
  ``VENV``, ``MODULES``, ``LAUNCHER``, ``SRUN_MPI``, ``SWEEP_NAME``);
* in a sweep template, the ``case`` table between ``# >>> sweep table`` and ``# <<< sweep table``:
  one case per array task, each a list of ``--set`` overrides for ``decomp run``.

Every value is checked before anything is written (positive counts, a SLURM time limit, array
indices inside the sweep table, names without spaces) and every config setting is loaded with
:func:`decomp.config.load_config`, so a typo fails here and not after the job waited in the queue.

Modules: :mod:`~decomp.slurm.options` (sbatch option values, TOML literals),
:mod:`~decomp.slurm.source` (the config or sweep to run, the template), :mod:`~decomp.slurm.script`
(rendering, submission).
"""

from __future__ import annotations

from decomp.slurm.options import (
    check_array,
    check_count,
    check_name,
    check_time,
    parse_array,
    parse_sweep_arg,
    toml_literal,
)
from decomp.slurm.script import (
    LAUNCHERS,
    TABLE_BEGIN,
    TABLE_END,
    JobSpec,
    log_path,
    render,
    sbatch_options,
    script_variable,
    submit,
    sweep_table,
)
from decomp.slurm.source import (
    REPO,
    SWEEP_KEYS,
    TEMPLATE_SUFFIX,
    Source,
    choose_template,
    find_template,
    load_source,
    template_dirs,
)

__all__ = [
    "LAUNCHERS",
    "REPO",
    "SWEEP_KEYS",
    "TABLE_BEGIN",
    "TABLE_END",
    "TEMPLATE_SUFFIX",
    "JobSpec",
    "Source",
    "check_array",
    "check_count",
    "check_name",
    "check_time",
    "choose_template",
    "find_template",
    "load_source",
    "log_path",
    "parse_array",
    "parse_sweep_arg",
    "render",
    "sbatch_options",
    "script_variable",
    "submit",
    "sweep_table",
    "template_dirs",
    "toml_literal",
]
