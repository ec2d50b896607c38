"""Which explanation to trust: faithfulness (deletion / insertion curves, ranking methods against a
random baseline) and the model-randomization sanity check; whether the model itself can be trusted:
the shortcut audit."""

from .audit import Audit, SwapTest, audit
from .faithfulness import Curve, Ranking, RankingRow, compare, deletion, insertion, random_map
from .robustness import PERTURBATIONS, Perturbation, Robustness, robustness
from .sanity import SanityReport, layer_groups, rank_correlation, sanity, ssim

__all__ = [
    "PERTURBATIONS", "Audit", "Curve", "Perturbation", "Ranking", "RankingRow", "Robustness", "SanityReport", "SwapTest",
    "audit", "compare", "deletion", "insertion", "layer_groups", "random_map", "rank_correlation", "robustness", "sanity",
    "ssim",
]
