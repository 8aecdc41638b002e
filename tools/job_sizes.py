"""The resources every job of a config asks for, read from Snakemake's own dry run (Markdown tables).

    .venv/bin/python tools/job_sizes.py configs/paper.yaml              # per-rule table and disk table
    .venv/bin/python tools/job_sizes.py configs/paper.yaml --json       # every planned job, as JSON

The jobs are those of `snakemake -n --profile profiles/slurm` on an empty working directory (no network: the
DAG resolves offline), with each job's resources as Snakemake resolved them: the rules' sized resources
(introspect.sizing, through rules/common.smk), then the profile's default-resources and set-resources. They are
recorded where Snakemake logs each planned job (snakemake.jobs.Job.log_info), so what is listed is exactly what
the SLURM executor would submit (`--mem`, `-t`, `--gpus`, `--cpus-per-task`), and which rules run locally.
The disk table is introspect.sizing.disk_usage's arithmetic for the config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))

#: --cores of the dry run: above any job's threads
UNCAPPED_CORES = 1024


@dataclasses.dataclass(frozen=True)
class PlannedJob:
    """One job of a dry run, with the resources Snakemake resolved for it."""

    rule: str
    wildcards: dict[str, str]
    resources: dict[str, Any]
    threads: int
    local: bool  # a localrule: runs in the main Snakemake process, never submitted

    @property
    def mem_mb(self) -> int:
        return int(self.resources["mem_mb"])

    @property
    def runtime(self) -> int:
        return int(self.resources["runtime"])

    @property
    def gpu(self) -> int:
        return int(self.resources.get("gpu", 0) or 0)


def _record_and_run(record: str, argv: list[str]) -> None:
    """Run Snakemake's CLI with Job.log_info wrapped to append every planned job to `record` (JSON lines)."""
    import snakemake.cli
    import snakemake.jobs

    original = snakemake.jobs.Job.log_info

    def log_info(self, *args, **kwargs):
        if not self.rule.norun:
            resources = {k: v for k, v in self.resources.items() if isinstance(v, (int, float, str))}
            entry = {"rule": self.rule.name, "wildcards": dict(self.wildcards_dict), "resources": resources,
                     "threads": int(self.threads), "local": self.rule.name in self.dag.workflow._localrules}
            with open(record, "a") as out:
                out.write(json.dumps(entry) + "\n")
        return original(self, *args, **kwargs)

    snakemake.jobs.Job.log_info = log_info
    snakemake.cli.main(argv)


def plan(configfile: str | Path, targets: Sequence[str] = (), profile: str | Path | None = REPO / "profiles/slurm",
         extra: Sequence[str] = (), timeout: int = 600) -> list[PlannedJob]:
    """The jobs of a dry run of `configfile` (its default target, or `targets`) in an empty working directory,
    through `profile` (None: the workflow profile only). Raises RuntimeError with Snakemake's output on failure."""
    with tempfile.TemporaryDirectory(prefix="job-sizes-") as tmp:
        record = Path(tmp) / "jobs.jsonl"
        workdir = Path(tmp) / "work"
        workdir.mkdir()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--record", str(record), "--",
               "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(Path(configfile).resolve()),
               "--dry-run", "--quiet", "rules", *(["--profile", str(profile)] if profile else []),
               # a dry run caps every job's threads at --cores (default 1 there); a SLURM run gives no --cores
               # and caps nothing, so the cap is lifted here
               "--cores", str(UNCAPPED_CORES), *extra, "--", *targets]
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir)
        if proc.returncode != 0:
            raise RuntimeError(f"snakemake dry run failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-6000:]}")
        lines = record.read_text().splitlines() if record.exists() else []
    return [PlannedJob(**json.loads(line)) for line in lines]


def _span(values: Sequence[float], fmt) -> str:
    lo, hi = min(values), max(values)
    return fmt(lo) if lo == hi else f"{fmt(lo)}-{fmt(hi)}"


def _gb(mb: float) -> str:
    return f"{mb / 1000:,.0f}"


def _duration(minutes: float) -> str:
    return f"{minutes:,.0f} min" if minutes < 120 else f"{minutes / 60:,.1f} h"


def rule_table(jobs: Sequence[PlannedJob]) -> str:
    """Markdown: one row per rule (in the workflow's stage order, introspect.sizing.RULES): jobs, host memory,
    wall time, GPUs, CPUs, GPU-hours asked."""
    from introspect.sizing import RULES

    order = list(RULES)
    by_rule: dict[str, list[PlannedJob]] = defaultdict(list)
    for job in sorted(jobs, key=lambda j: (order.index(j.rule) if j.rule in order else len(order), j.rule)):
        by_rule[job.rule].append(job)
    lines = ["| rule | jobs | memory (GB) | runtime | GPUs | CPUs | GPU-hours asked (all jobs) | runs |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for rule, group in by_rule.items():
        gpu_hours = sum(j.gpu * j.runtime / 60 for j in group)
        where = "local" if group[0].local else "SLURM"
        lines.append(f"| `{rule}` | {len(group)} | {_span([j.mem_mb for j in group], _gb)} | "
                     f"{_span([j.runtime for j in group], _duration)} | {_span([j.gpu for j in group], str)} | "
                     f"{_span([j.threads for j in group], str)} | {gpu_hours:,.0f} | {where} |")
    total = sum(j.gpu * j.runtime / 60 for j in jobs)
    lines.append(f"| **total** | {len(jobs)} | | | | | {total:,.0f} | |")
    return "\n".join(lines)


def disk_table(config: dict, root: Path = REPO) -> str:
    from introspect.sizing import disk_usage

    rows = disk_usage(config, root)
    lines = ["| what | formula | GB |", "|---|---|---:|"]
    lines += [f"| {what} | {formula} | {size / 1e9:,.1f} |" for what, formula, size in rows]
    lines.append(f"| **total** (one resume checkpoint at a time) | | {sum(r[2] for r in rows) / 1e9:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--record":  # the dry run itself, in a child process
        _record_and_run(sys.argv[2], sys.argv[4:])
        return
    import yaml

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("targets", nargs="*")
    parser.add_argument("--json", action="store_true", help="print every planned job as JSON")
    parser.add_argument("--profile", default=str(REPO / "profiles/slurm"), help="'none': the workflow profile only")
    args = parser.parse_args()
    jobs = plan(args.config, args.targets, None if args.profile == "none" else args.profile)
    if args.json:
        print(json.dumps([dataclasses.asdict(j) for j in jobs], indent=1))
        return
    print(rule_table(jobs))
    print()
    print(disk_table(yaml.safe_load(Path(args.config).read_text())))


if __name__ == "__main__":
    main()
