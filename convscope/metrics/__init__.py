"""Which explanation to trust: faithfulness (deletion / insertion curves, ``rank``: methods ranked against a
random baseline) and the model-randomization sanity check; whether the model itself can be trusted: the
robustness sweep, the shortcut audit and SpRAy (a class's strategies, found by clustering its explanations).
Every object here is computed, never drawn: ``convscope.render`` draws them by their kind."""

from .audit import Audit, SwapTest, audit
from .faithfulness import Curve, Ranking, RankingRow, deletion, insertion, random_map, rank
from .robustness import PERTURBATIONS, Perturbation, Robustness, robustness
from .sanity import SanityReport, layer_groups, rank_correlation, sanity, ssim
from .spray import Strategies, spray, spray_classes

__all__ = [
    "PERTURBATIONS", "Audit", "Curve", "Perturbation", "Ranking", "RankingRow", "Robustness", "SanityReport", "Strategies",
    "SwapTest", "audit", "deletion", "insertion", "layer_groups", "random_map", "rank", "rank_correlation", "robustness",
    "sanity", "spray", "spray_classes", "ssim",
]
