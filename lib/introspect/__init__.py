"""introspect: train language models to explain their own computations (Li et al., 2025).

The package holds every piece of logic of the Snakemake workflow; the workflow's scripts only
read Snakemake's inputs and parameters and call into it. Nothing here imports snakemake.
"""

__version__ = "0.1.0"
