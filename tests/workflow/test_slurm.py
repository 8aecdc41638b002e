"""The smoke workflow through the SLURM profile (profiles/slurm) on a real single-node SLURM.

Needs a running cluster whose only node is this host, e.g. the one tools/ci-slurm.sh sets up:

    bash tools/ci-slurm.sh install && bash tools/ci-slurm.sh start
    .venv/bin/python -m pytest tests/test_slurm.py -v

Skips (never installs or starts anything) when the SLURM tools are missing or the local node is not idle.
Each job is checked in SLURM's own records (`scontrol show job`, kept for MinJobAge=300 s after it ends).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slurm

from conftest import REPO

from introspect.sizing import LOCAL_RULES

SNAKEFILE = REPO / "Snakefile"
PROFILE = REPO / "profiles" / "slurm"
SMOKE = REPO / "configs" / "smoke.yaml"
BIN = Path(sys.executable).parent
HOST = socket.gethostname().split(".")[0]
ALL_TARGETS = os.environ.get("SLURM_TEST_ALL_TARGETS") == "1"  # test A: the whole smoke workflow, not its models
# seconds per Snakemake run (the whole smoke workflow, 21 jobs, takes about 10 min on 2 cores)
RUN_TIMEOUT = int(os.environ.get("SLURM_TEST_TIMEOUT", "1800" if ALL_TARGETS else "600"))

# Test-only executor settings (a real cluster wants the plugin's defaults, so they are not in the profile):
# - squeue: the test cluster has no accounting database, and with a failing `sacct` the plugin loses track
#   of its jobs and Snakemake waits forever. squeue sees a finished job for MinJobAge (300 s) >= 3 x 10 s.
# - 10 s: the plugin first polls after this long, then backs off by +10 s while no job finishes (10, 30,
#   60 s, ...); a smoke job takes about 20 s, so every stage is seen done at 30 s (default 40: 40, 90 s).
# - keep the SLURM logs of successful jobs, to check them below.
TEST_FLAGS = [
    "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "10",
    "--slurm-keep-successful-logs",
]

SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
# .snakemake/slurm_logs/rule_<rule>[/<wildcards>]/<slurm job id>.log
SLURM_LOG = re.compile(r"/\.snakemake/slurm_logs/rule_(\w+)/(?:([^/]+)/)?(\d+)\.log$")


def _run(cmd: list[str], timeout: int = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def slurm_node() -> str:
    """The local node's name, once SLURM is known to be up with that node idle; skips otherwise."""
    missing = [tool for tool in ("sinfo", "sbatch", "squeue", "scontrol", "scancel") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"SLURM client tools not found ({', '.join(missing)}); "
                    "set up a test cluster with `bash tools/ci-slurm.sh install && bash tools/ci-slurm.sh start`")
    try:
        proc = _run(["sinfo", "-h", "-N", "-n", HOST, "-o", "%t"], timeout=20)
    except subprocess.TimeoutExpired:
        pytest.skip("sinfo did not answer in 20 s (slurmctld not running?)")
    if proc.returncode != 0:
        pytest.skip(f"sinfo failed (SLURM not running? try `bash tools/ci-slurm.sh start`): {proc.stderr.strip()}")
    states = set(proc.stdout.split())
    if not states:
        pytest.skip(f"this host ({HOST}) is not a node of the running SLURM cluster")
    if states != {"idle"}:
        pytest.skip(f"SLURM node {HOST} is {'/'.join(sorted(states))}, not idle (stray jobs? see `squeue`)")
    if not Path("/etc/slurm/slurm.conf").exists():
        # the plugin's job step drops every SLURM_* variable (SLURM_CONF too) before its inner srun
        pytest.skip("/etc/slurm/slurm.conf is missing: SLURM jobs of the plugin only find the config there")
    return HOST


def snakemake_env() -> dict[str, str]:
    """Environment for the run and, through sbatch --export=ALL, its jobs: the venv first on PATH as if it were
    activated (a job runs `<this venv's python> -m snakemake`; tools it starts by name come from the venv
    too), Hugging Face offline."""
    env = dict(os.environ)
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


class SlurmRun:
    """One Snakemake run through the SLURM profile, with the SLURM jobs it submitted."""

    def __init__(self, workdir: Path, configfile: Path, targets: list[str]):
        self.workdir = workdir
        cmd = ["timeout", "-k", "5", str(RUN_TIMEOUT), str(BIN / "snakemake"), "-s", str(SNAKEFILE),
               "--directory", str(workdir), "--profile", str(PROFILE), *TEST_FLAGS,
               "--configfile", str(configfile), "--", *targets]
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=workdir, env=snakemake_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=RUN_TIMEOUT + 30)
            self.returncode, self.output = proc.returncode, proc.stdout
        except subprocess.TimeoutExpired as err:  # only if `timeout` itself got stuck
            out = err.output or ""
            self.returncode, self.output = -1, out.decode(errors="replace") if isinstance(out, bytes) else out
        self.seconds = time.monotonic() - start
        (workdir / "snakemake.out").write_text(self.output)
        print(f"\nSnakemake through SLURM: exit {self.returncode} after {self.seconds:.1f} s ({workdir})")
        match = re.search(r"SLURM run ID: (\S+)", self.output)
        self.run_id = match.group(1) if match else None
        submitted = SUBMITTED.findall(self.output)
        self.cancel_leftovers({slurm_id for _, slurm_id, _ in submitted})
        # {slurm job id: (rule, wildcards or None, log file)}, from Snakemake's "submitted with SLURM jobid"
        self.jobs: dict[str, tuple[str, str | None, Path]] = {}
        for _, slurm_id, log in submitted:
            match = SLURM_LOG.search(log)
            assert match and match.group(3) == slurm_id, f"unexpected SLURM log path {log}"
            self.jobs[slurm_id] = (match.group(1), match.group(2), Path(log))

    def cancel_leftovers(self, ids: set[str]):
        """Cancel jobs of this run still queued or running (a run that failed or timed out)."""
        if self.run_id:
            ids |= set(_run(["squeue", "-h", "--name", self.run_id, "-o", "%i"]).stdout.split())
        active = [i for i in ids if scontrol_job(i).get("JobState") in ("PENDING", "RUNNING", "CONFIGURING")]
        if active:
            _run(["scancel", *active])

    def check_ok(self):
        timed_out = f" (timed out after {RUN_TIMEOUT} s: SLURM_TEST_TIMEOUT)" if self.returncode in (124, 137, -9) else ""
        assert self.returncode == 0, f"snakemake exit {self.returncode}{timed_out}:\n{self.output[-6000:]}"

    def rules(self) -> list[str]:
        return sorted(rule for rule, _, _ in self.jobs.values())

    def ids_of(self, rule: str) -> list[str]:
        return [i for i, (r, _, _) in self.jobs.items() if r == rule]


def scontrol_job(job_id: str) -> dict[str, str]:
    """SLURM's record of a job as {field: value} (empty once slurmctld has forgotten it)."""
    proc = _run(["scontrol", "show", "job", "-o", job_id])
    if proc.returncode != 0:
        return {}
    return dict(re.findall(r"(\S+?)=(\S*)", proc.stdout))


def check_slurm_records(run: SlurmRun, node: str) -> dict[str, dict[str, str]]:
    """Every job Snakemake reports as submitted is a completed SLURM job of this run, with its log."""
    records = {}
    for job_id, (rule, wildcards, log) in run.jobs.items():
        job = scontrol_job(job_id)
        assert job, f"SLURM has no record of job {job_id} ({rule})"
        assert job["JobState"] == "COMPLETED", (job_id, rule, job["JobState"], job.get("Reason"))
        assert job["WorkDir"] == str(run.workdir)
        assert job["NodeList"] == node
        assert job["Comment"] == f"rule_{rule}" + (f"_wildcards_{wildcards}" if wildcards else "")
        assert run.run_id and job["JobName"] == run.run_id
        assert log.is_relative_to(run.workdir / ".snakemake" / "slurm_logs")
        text = log.read_text()
        assert f"rule {rule}:" in text and "1 of 1 steps (100%) done" in text, text[-3000:]
        records[job_id] = job
    # and SLURM lists no other job under this run's name
    listed = _run(["squeue", "-h", "-t", "all", "--name", run.run_id, "-o", "%i"]).stdout.split()
    assert sorted(listed) == sorted(run.jobs)
    return records


def planned_jobs(text: str) -> dict[str, int]:
    """The 'Job stats' table Snakemake prints before running, as {rule: count}."""
    match = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal\s+\d+", text, re.S)
    assert match, text[-3000:]
    return {rule: int(count) for rule, count in (line.split() for line in match.group(1).splitlines())}


def slurm_minutes(minutes: int) -> str:
    """A runtime in minutes as scontrol's TimeLimit ([D-]HH:MM:SS)."""
    days, rest = divmod(int(minutes), 24 * 60)
    return (f"{days}-" if days else "") + f"{rest // 60:02d}:{rest % 60:02d}:00"


def job_sizes():
    """tools/job_sizes.py as a module (the dry-run reader of each job's resources)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("job_sizes", REPO / "tools/job_sizes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["job_sizes"] = module
    spec.loader.exec_module(module)
    return module


def has_gpu_request(job: dict[str, str]) -> bool:
    # `--gpus=N` shows as TresPerJob=gres:gpu:N (TRES= lists no gres/gpu without an accounting database)
    return "gpu" in job.get("TresPerJob", "") + job.get("TresPerNode", "") + job.get("TresPerTask", "")


def test_smoke_workflow_runs_through_slurm(slurm_node, tmp_path):
    """The smoke config's models (2 tokenizers, 2 models), or with SLURM_TEST_ALL_TARGETS=1 its whole default
    target (every stage: about 10 min on 2 cores)."""
    models = yaml.safe_load(SMOKE.read_text())["materialise"]["models"]
    run = SlurmRun(tmp_path, SMOKE, [] if ALL_TARGETS else [f"resources/models/{name}" for name in models])
    run.check_ok()
    for name in models:
        assert (tmp_path / "resources/models" / name / "introspect.json").is_file()
    # every job of the plan went through SLURM except the local rules (tables, figures, small downloads such
    # as the two tokenizers) and the target rule `all`, which has nothing to run; among them two models
    planned = planned_jobs(run.output)
    expected = {rule: n for rule, n in planned.items() if rule != "all" and rule not in LOCAL_RULES}
    assert planned.get("materialise_tokenizer") == 2 and expected.get("materialise_model") == 2, planned
    assert Counter(run.rules()) == expected, run.output[-4000:]
    assert set(re.findall(r"^localrule (\w+):", run.output, re.M)) <= LOCAL_RULES | {"all"}
    assert re.search(r"^localrule materialise_tokenizer:", run.output, re.M)
    records = check_slurm_records(run, slurm_node)
    # SLURM got the memory, wall time and CPUs the workflow sizes for each job (introspect.sizing, as the dry
    # run of tools/job_sizes.py resolves them through this profile), and no GPU
    sizes = {}
    for job in job_sizes().plan(SMOKE, [] if ALL_TARGETS else [f"resources/models/{name}" for name in models]):
        sizes.setdefault(job.rule, set()).add((f"{job.mem_mb}M", slurm_minutes(job.runtime), str(job.threads)))
    for job_id, job in records.items():
        rule = run.jobs[job_id][0]
        assert (job["MinMemoryNode"], job["TimeLimit"], job["NumCPUs"]) in sizes[rule], (rule, job, sizes[rule])
        assert not has_gpu_request(job), (rule, job)  # compute.gpus is absent in the smoke config


def test_gpu_stage_asks_slurm_for_a_gpu(slurm_node, tmp_path):
    gres = _run(["sinfo", "-h", "-N", "-n", slurm_node, "-o", "%G"]).stdout
    if "gpu" not in gres:
        pytest.skip(f"SLURM node {slurm_node} has no gpu gres (tools/ci-slurm.sh adds one unless SLURM_CI_GPUS=0)")
    config = yaml.safe_load(SMOKE.read_text())
    config.setdefault("compute", {}).setdefault("gpus", {})["materialise"] = 1
    configfile = tmp_path / "smoke-gpu.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    workdir = tmp_path / "run"
    workdir.mkdir()

    run = SlurmRun(workdir, configfile, ["resources/models/tiny-smollm2"])  # one model is enough here
    run.check_ok()
    assert (workdir / "resources/models/tiny-smollm2/introspect.json").is_file()
    # the tokenizer is a local rule (a small download): only the model went through SLURM
    assert run.rules() == ["materialise_model"], run.output[-4000:]
    assert re.search(r"^localrule materialise_tokenizer:", run.output, re.M)
    records = check_slurm_records(run, slurm_node)
    [model_job] = run.ids_of("materialise_model")
    assert re.search(r"gres[:/]gpu[:=]1$", records[model_job].get("TresPerJob", "")), records[model_job]
    assert re.search(r"resources: .*\bgpu=1\b", run.jobs[model_job][2].read_text())
