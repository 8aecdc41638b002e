"""Snakemake wrapper: collect the hint task's multiple-choice questions."""

from introspect.sources.questions import load_questions, questions_frame
from introspect.runlog import logged
from introspect.schemas import write_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    spec = dict(params.questions)
    questions = load_questions(spec.pop("backend"), **spec, seed=params.seed)
    frame = questions_frame(questions)
    log.info("%d questions; correct letters %s", frame.height,
             dict(sorted(frame["answer"].value_counts().iter_rows())))
    log.info("questions per subject: %s", dict(sorted(frame["subject"].value_counts().iter_rows())))
    write_table(frame, snakemake.output[0], "hints_questions")  # noqa: F821
