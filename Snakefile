# Training language models to explain their own computations (Li et al., 2025), as one workflow.
# Entry point: `snakemake --cores all` (offline default config.yaml), or a table target such as
# `snakemake results/table1.csv --cores all` once it exists. See README.md.

import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")

# The library lives in lib/introspect. It is pip-installed in the project's .venv; putting it on the
# path here as well lets a job find it in any environment (a conda env on a cluster, a SLURM job).
LIB = str(Path(workflow.basedir) / "lib")
sys.path.insert(0, LIB)
os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (LIB, os.getenv("PYTHONPATH")) if p))

from introspect.config import ConfigError, check_config
from introspect.configfiles import ConfigFileError, check_config_files

# Snakemake's own reading of a config file names no line for a syntax error and keeps the last of a key
# written twice: read them strictly first (config.yaml before Snakemake does, --configfile ones after).
try:
    check_config_files([p for p in ["config.yaml", *workflow.overwrite_configfiles] if Path(p).exists()])
except ConfigFileError as err:
    raise WorkflowError(str(err)) from None


configfile: "config.yaml"


# `snakemake --report report.html` after a run: every table and figure with its caption (report/*.rst).
report: "report/workflow.rst"


try:
    check_config(config, schema_path=Path(workflow.basedir) / "schemas" / "config.schema.yaml", root=Path.cwd())
except ConfigError as err:
    raise WorkflowError(str(err)) from None


include: "rules/common.smk"


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    target="|".join(map(re.escape, MODELS)),

include: "rules/models.smk"


# A task's rules exist when the config has its section (a config may run a subset of the paper).
if config.get("patching"):

    include: "rules/patching.smk"

    if config["patching"].get("explain"):

        include: "rules/patching_explain.smk"


if config.get("features"):

    include: "rules/features.smk"

    if config["features"].get("explain"):

        include: "rules/features_explain.smk"


if config.get("hints"):

    include: "rules/hints.smk"

    if config["hints"].get("explain"):

        include: "rules/hints_explain.smk"



rule all:
    # Every paper target the active config defines.
    input:
        paper_targets(),
    default_target: True
