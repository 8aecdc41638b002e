"""Snakemake wrapper: draw the counterfactual pairs of the activation-patching task."""

from introspect.sources.facts import make_pairs
from introspect.sources.facts import FactsError, load_facts, pairs_frame
from introspect.runlog import logged
from introspect.schemas import write_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    facts = load_facts(**params.facts)
    pairs = make_pairs(facts, params.n_pairs, seed=params.seed, n_options=params.n_options)
    if len(pairs) < params.n_pairs:  # a silent cap would shrink Tables 2 and 6 unnoticed
        raise FactsError(f"patching.n_pairs: {params.n_pairs} pairs asked, but the {len(facts)} facts make only "
                         f"{len(pairs)} with n_options {params.n_options}; lower n_pairs (or add facts)")
    log.info("%d facts -> %d pairs", len(facts), len(pairs))
    write_table(pairs_frame(pairs), snakemake.output[0], "patching_pairs")  # noqa: F821
