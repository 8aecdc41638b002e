"""Names shared by the rules, the tables and the figures: baseline display names and scaling points.

A scaling point of a run (Figures 5 and 7) is named ``<run>@n<k>``: the run trained on at most k features
per layer (:func:`scaled_name`, :func:`split_scaled`). Nothing here imports torch.
"""

from __future__ import annotations

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
