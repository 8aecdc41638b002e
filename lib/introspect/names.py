"""Names shared by the rules, the tables and the figures: baseline display names and scaling points.

A scaling point of a run (Figures 5 and 7) is named ``<run>@n<k>``: the run trained on at most k features
per layer (:func:`scaled_name`, :func:`split_scaled`). Nothing here imports torch.
"""

from __future__ import annotations

from typing import Any, Mapping

#: Feature-description baselines and their display names in tables and figures; a run may not take one of
#: these names.
FEATURE_BASELINES = {"nn_all": "NN-all", "nn_layer": "NN-layer", "selfie": "SelfIE", "gold": "gold SAE labels"}


SCALE_MARK = "@n"


def scaled_name(method: str, n: int) -> str:
    """The name of a scaling-curve point (Figures 5, 7): `method` trained on / retrieving from `n` features per layer."""
    return f"{method}{SCALE_MARK}{int(n)}"


def split_scaled(name: str) -> tuple[str, int | None]:
    """(method, n per layer) of a scaling-point name; (name, None) for any other method."""
    base, mark, n = name.rpartition(SCALE_MARK)
    if mark and base and n.isdigit():
        return base, int(n)
    return name, None


#: SelfIE baselines: 'selfie' (the target reads its own vectors) or 'selfie-<registry model>'
SELFIE_METHOD = "selfie"
SELFIE_PREFIX = SELFIE_METHOD + "-"


def selfie_method(model: str | None = None) -> str:
    """The method name of SelfIE run with `model` as the interpreting model (None: the table's target)."""
    return SELFIE_METHOD if model is None else SELFIE_PREFIX + model


def is_selfie(method: str) -> bool:
    """Whether a feature-table method name is a SelfIE baseline ('selfie' or 'selfie-<model>')."""
    return method == SELFIE_METHOD or (method.startswith(SELFIE_PREFIX) and len(method) > len(SELFIE_PREFIX))


def selfie_interpreter(method: str, target: str, models: Mapping[str, Any] | None = None) -> str:
    """The registry model that a SelfIE method runs with: `target` for 'selfie', <model> for 'selfie-<model>'.

    With `models` (registry name -> spec with ``hidden_size``), the model must be a registry entry of the
    target's hidden size, since it reads the target's vectors at its embedding layer; the error says what to
    change."""
    if not is_selfie(method):
        raise ValueError(f"{method!r} is not a SelfIE method; expected 'selfie' or 'selfie-<registry model>'")
    model = target if method == SELFIE_METHOD else method[len(SELFIE_PREFIX):]
    if models is None:
        return model
    if model not in models:
        raise ValueError(f"SelfIE baseline {method!r}: {model!r} is not in the model registry (models:); "
                         f"name a registry model after 'selfie-' (one of {', '.join(sorted(models))})")
    if target not in models:
        raise ValueError(f"SelfIE baseline {method!r}: its target {target!r} is not in the model registry")
    got, want = models[model].hidden_size, models[target].hidden_size
    if got != want:
        raise ValueError(f"SelfIE baseline {method!r}: {model!r} has hidden size {got}, but it must read "
                         f"{target!r}'s vectors of size {want}; use a model of hidden size {want} (e.g. the "
                         "target's instruct variant) or drop the baseline")
    return model


#: The simulator score's definitions (module docstring); the first is the default.
CORRELATIONS = ("concatenated", "per_exemplar")

#: One line per definition, for table notes.
CORRELATION_NOTES = {
    "concatenated": "|Pearson| over the concatenated tokens of the scored exemplars (as the authors' evaluation "
                    "code computes it)",
    "per_exemplar": "|mean over exemplars of the per-exemplar Pearson| (equation 2 as printed; exemplars with no "
                    "defined correlation left out)",
}


def check_correlation(correlation: str) -> str:
    if correlation not in CORRELATIONS:
        raise ValueError(f"features.simulator.correlation: unknown definition {correlation!r}; use one of "
                         f"{', '.join(CORRELATIONS)}")
    return correlation
