"""SpRAy: find a class's prediction strategies — shortcuts included — by clustering its explanations, no masks needed.

Spectral relevance analysis (Lapuschkin et al. 2019, "Unmasking Clever Hans predictors and assessing what
machines really learn", Nature Communications 10:1096): the PASCAL VOC 'horse' classifier that looked at a
copyright watermark in the corner instead of the horse was found by clustering the attribution maps of all
'horse' pictures. Pictures the model explains the same way form one cluster: a cluster whose mean map sits in a
corner is a strategy that does not look at the object.

The steps are the paper's, with the graph and the eigengap made robust to one strategy whose maps vary smoothly:

1. **Preprocess**: each map (N, h, w) keeps its positive part (relevance), is pooled to ``size``×``size`` (area
   averaging; maps smaller than that are first upsampled bilinearly) and divided by its sum, so every picture
   weighs the same; a map with no positive mass stays all zero (counted in ``without_evidence``).
2. **Affinity**: the *mutual* k-nearest-neighbour graph on the flattened maps (Euclidean; an edge when each of two
   pictures is among the other's ``k`` nearest, plus each picture's nearest neighbour so none is alone), k =
   ``neighbours`` or ``max(10, round(sqrt(N)))``. The paper's graph links a picture to its k nearest either way
   (CoRelAy's ``SparseKNN``); the mutual graph (Maier, Hein & von Luxburg 2009) keeps a tight group of maps — a
   watermark's, or the near-uniform maps of a model that looks at the background — from being wired to a diffuse
   group (an object anywhere in the picture) whose maps are each nearer the tight group than to one another.
   Sparse: memory grows with N·k, never N².
3. **Spectrum**: the smallest eigenvalues of the normalized graph Laplacian ``L = I - D^-1/2 A D^-1/2`` (dense
   ``eigh`` up to ``DENSE`` pictures, else ``scipy.sparse.linalg.eigsh`` from a seeded start). The **eigengap**
   — the largest step among the first ``max_clusters + 1`` eigenvalues, measured between their square roots (see
   :func:`gaps`: a strategy whose maps vary smoothly has eigenvalues growing like j², whose raw steps widen along
   the spectrum) — suggests how many strategies there are (c well-separated groups give c eigenvalues near 0).
4. **Clusters**: k-means (``random_state=seed``, 10 starts) on the rows, normalized to unit length, of the
   eigenvectors of the c smallest eigenvalues (Ng, Jordan & Weiss 2001). Clusters are numbered by size, largest
   first. Above ``limit`` pictures a seeded sample is clustered and the rest join the nearest mean map.

``spray(maps, ...)`` -> :class:`Strategies` (kind "strategies"); ``spray_classes`` runs it per class.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, OptionError
from ..result import Displayable, Result

__all__ = ["Strategies", "eigengap_suggestion", "gaps", "knn_affinity", "relevance_features", "spectrum", "spray", "spray_classes",
           "where_words"]

EXAMPLES = 8  # pictures kept per cluster, nearest its mean map
THUMBNAIL = 96  # the longest side of a kept picture and its map, in pixels
DENSE = 1000  # up to this many pictures the eigenproblem is solved dense (exact, about 10 MB)
SPREAD = 0.3  # a map needing more than this share of the picture to hold half its mass is "spread"
FOCUSED = 0.4  # one ninth of the picture holding at least this share of the mass is named alone
CHUNK = 512  # pictures pooled / compared at a time (bounded memory)
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "centre", "right")
QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")


# -- where a map's mass lies (words and numbers; shared by the table, the verdict and the figure) ----------------
def _cells(mass: np.ndarray, parts: int) -> np.ndarray:
    """(parts, parts) the mass of each block of a ``parts``×``parts`` partition of the (s, s) map ``mass``."""
    size = mass.shape[0]
    index = np.minimum((np.arange(size) * parts) // size, parts - 1)
    blocks = np.zeros((parts, parts))
    np.add.at(blocks, (index[:, None], index[None, :]), mass)
    return blocks


def _cell_name(row: int, column: int) -> str:
    if (row, column) == (1, 1):
        return "the centre"
    if row == 1:
        return f"the {COLUMNS[column]} edge"
    if column == 1:
        return f"the {ROWS[row]} edge"
    return f"the {ROWS[row]}-{COLUMNS[column]} corner"


def focus(mass: np.ndarray) -> float:
    """The smallest share of the picture's cells that holds half of the map's mass (a uniform map: 0.5; a map in
    one cell: 1 / cells); NaN for an empty map."""
    flat = np.sort(np.asarray(mass, dtype=np.float64).reshape(-1))[::-1]
    total = flat.sum()
    if not total > 0:
        return float("nan")
    return float((np.searchsorted(np.cumsum(flat) / total, 0.5) + 1) / flat.size)


def centre_share(mass: np.ndarray) -> float:
    """Share of the mass in the central square of half the side (a quarter of the picture)."""
    size = mass.shape[0]
    low, high = size // 4, size - size // 4
    total = mass.sum()
    return float(mass[low:high, low:high].sum() / total) if total > 0 else float("nan")


def quadrant_shares(mass: np.ndarray) -> dict[str, float]:
    """Share of the mass in each quarter of the picture (top-left, top-right, bottom-left, bottom-right)."""
    blocks, total = _cells(mass, 2), mass.sum()
    shares = blocks / total if total > 0 else np.full((2, 2), np.nan)
    return dict(zip(QUADRANTS, shares.reshape(-1).tolist()))


def where_words(mass: np.ndarray) -> str:
    """Where a (mean) map's mass concentrates, in words that follow "explained by": "the bottom-left corner",
    "the top edge", "the centre", "mostly the centre", "maps spread over the whole picture" or "maps with no
    positive evidence". Named by the ninth of the picture (3×3) holding most mass."""
    mass = np.clip(np.asarray(mass, dtype=np.float64), 0, None)
    total = mass.sum()
    if not total > 0:
        return "maps with no positive evidence"
    if focus(mass) > SPREAD:
        return "maps spread over the whole picture"
    ninths = _cells(mass, 3) / total
    row, column = np.unravel_index(int(np.argmax(ninths)), ninths.shape)
    name = _cell_name(int(row), int(column))
    return name if ninths[row, column] >= FOCUSED else f"mostly {name}"


# -- the result ------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class Strategies(Displayable):
    """The strategies SpRAy found among one class's explanations (Lapuschkin et al. 2019).

    assignment (N,): each picture's cluster, 0 = the largest; eigenvalues (max_clusters + 1,): the smallest of the
    normalized graph Laplacian, ascending; suggested: the eigengap's number of clusters; mean_maps (k, size, size):
    the normalized maps (unit sum) averaged per cluster; examples: cluster -> up to 8 picture indices nearest its
    mean map, nearest first; pictures: picture index -> uint8 thumbnail (t, t, 3), only for the examples (None when
    no pictures were given); example_maps: picture index -> its map's positive part (t, t) at the thumbnail's size;
    ids: each picture's id (None: its index); name: the class; method: what made the maps; separation: silhouette
    of the clusters in map space (-1..1, NaN for one cluster); evidence (N,): the map had positive mass;
    neighbours: the graph's k; clustered: how many pictures were clustered (the rest, when fewer than N, joined
    the nearest mean map); forced: the number of clusters was given, not suggested. Kind "strategies"."""

    kind = "strategies"

    assignment: np.ndarray
    eigenvalues: np.ndarray
    suggested: int
    mean_maps: np.ndarray
    examples: dict[int, list[int]]
    pictures: dict[int, np.ndarray] | None = field(repr=False)
    example_maps: dict[int, np.ndarray] = field(repr=False)
    ids: list[Any] | None
    name: str
    method: str
    separation: float
    evidence: np.ndarray = field(repr=False)
    neighbours: int = 0
    clustered: int = 0
    forced: bool = False
    seed: int = 0

    def __len__(self) -> int:
        return int(self.assignment.shape[0])

    @property
    def clusters(self) -> int:
        """How many strategies (clusters) there are."""
        return int(self.mean_maps.shape[0])

    @property
    def sizes(self) -> np.ndarray:
        """(k,) pictures per cluster, largest first."""
        return np.bincount(self.assignment, minlength=self.clusters)

    @property
    def shares(self) -> np.ndarray:
        """(k,) each cluster's share of the pictures."""
        return self.sizes / max(1, len(self))

    @property
    def sampled(self) -> bool:
        """A sample was clustered and the other pictures joined the nearest mean map."""
        return self.clustered < len(self)

    @property
    def without_evidence(self) -> int:
        """Pictures whose map has no positive value (they cluster together: nothing to locate)."""
        return int((~self.evidence).sum())

    @property
    def eigengap(self) -> float:
        """The gap after the ``clusters``-th smallest eigenvalue, between square roots (as the suggestion measures
        it: see ``gaps``): how clearly the graph falls into that many parts."""
        found = gaps(self.eigenvalues)
        return float(found[self.clusters - 1]) if self.clusters - 1 < found.size else float("nan")

    def where(self, cluster: int) -> str:
        """Where cluster ``cluster``'s mean map concentrates, in words (see :func:`where_words`)."""
        return where_words(self.mean_maps[cluster])

    def describe(self) -> list[dict[str, Any]]:
        """One dict per cluster: pictures, share, where (words), centre (share of the mass in the central
        quarter), quadrant (the quarter with most mass) and its share, focus (the share of the picture holding
        half the mass: 0.5 for a uniform map)."""
        rows = []
        for c, (count, share) in enumerate(zip(self.sizes.tolist(), self.shares.tolist())):
            mean = self.mean_maps[c]
            quadrants = quadrant_shares(mean)
            top = max(quadrants, key=lambda q: -1.0 if math.isnan(quadrants[q]) else quadrants[q])
            rows.append({"cluster": c, "pictures": int(count), "share": float(share), "where": self.where(c),
                         "centre": centre_share(mean), "quadrant": top, "quadrant_share": quadrants[top],
                         "focus": focus(mean)})
        return rows

    @property
    def verdict(self) -> str:
        """In plain words: '2 strategies: 52% of 'horse' pictures are explained by the bottom-left corner, 48% by
        the centre'."""
        what = f"'{self.name}' pictures" if self.name else "pictures"
        rows = self.describe()
        if self.clusters == 1:
            text = f"1 strategy: all {len(self)} {what} are explained by {rows[0]['where']}"
        else:
            parts = [f"{rows[0]['share']:.0%} of {what} are explained by {rows[0]['where']}"]
            parts += [f"{row['share']:.0%} by {row['where']}" for row in rows[1:]]
            how = "forced" if self.forced else "eigengap"
            text = f"{self.clusters} strategies ({how}): " + ", ".join(parts)
        if self.sampled:
            text += f" (a sample of {self.clustered} of {len(self)} pictures clustered, the rest joined the nearest mean map)"
        return text

    def table(self) -> str:
        """A row per cluster (pictures, share, where its mass lies), the spectrum and the verdict, as text."""
        lines = [f"SpRAy of {len(self)} {self.method + ' ' if self.method else ''}maps"
                 f"{' of ' + repr(self.name) if self.name else ''}: {self.clusters} cluster{'s' if self.clusters != 1 else ''} "
                 f"({'forced' if self.forced else 'eigengap'}; suggested {self.suggested})",
                 f"{'cluster':<8}{'pictures':>9}{'share':>8}{'centre':>8}  {'richest quarter':<20}{'half mass in':>13}  where",
                 ]
        for row in self.describe():
            quarter = f"{row['quadrant']} {row['quadrant_share']:.0%}" if not math.isnan(row["quadrant_share"]) else "-"
            half = f"{row['focus']:.0%}" if not math.isnan(row["focus"]) else "-"
            centre = f"{row['centre']:.0%}" if not math.isnan(row["centre"]) else "-"
            lines.append(f"{row['cluster']:<8}{row['pictures']:>9}{row['share']:>8.0%}{centre:>8}  {quarter:<20}{half:>13}  "
                         f"{row['where']}")
        values = ", ".join(f"{v:.3f}" for v in self.eigenvalues.tolist())
        lines.append(f"Laplacian eigenvalues: {values}; eigengap after {self.clusters}: {self.eigengap:.3f}; "
                     f"silhouette {'-' if math.isnan(self.separation) else f'{self.separation:.2f}'}; {self.neighbours} neighbours")
        if self.without_evidence:
            lines.append(f"{self.without_evidence} maps had no positive evidence")
        lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        """The numbers as a dict (for JSON; NaN as None)."""
        def plain(value: float) -> float | None:
            return None if math.isnan(value) else float(value)

        strategies = [{**row, "centre": plain(row["centre"]), "quadrant_share": plain(row["quadrant_share"]),
                       "focus": plain(row["focus"]), "examples": [self._id(i) for i in self.examples.get(row["cluster"], [])]}
                      for row in self.describe()]
        return {"name": self.name, "method": self.method, "pictures": len(self), "clusters": self.clusters,
                "suggested": self.suggested, "forced": self.forced, "eigenvalues": [float(v) for v in self.eigenvalues],
                "eigengap": plain(self.eigengap), "separation": plain(self.separation), "neighbours": self.neighbours,
                "size": int(self.mean_maps.shape[-1]), "clustered": self.clustered, "without_evidence": self.without_evidence,
                "strategies": strategies, "verdict": self.verdict}

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per picture: its id, its cluster and whether its map had positive evidence."""
        return [{"id": self._id(i), "cluster": int(c), "evidence": bool(e)}
                for i, (c, e) in enumerate(zip(self.assignment.tolist(), self.evidence.tolist()))]

    def _id(self, index: int) -> Any:
        return index if self.ids is None else self.ids[index]


# -- preprocessing -----------------------------------------------------------------------------------------------
def _as_maps(maps: Any) -> np.ndarray | torch.Tensor:
    """(N, h, w) maps from a tensor, an array or a Result (its ``maps()``); one-line errors for anything else."""
    if isinstance(maps, Result):
        maps = maps.maps()
    if not isinstance(maps, torch.Tensor):
        try:
            maps = np.asarray(maps, dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError(f"maps must be a (N, h, w) array or tensor of numbers, got {type(maps).__name__}") from None
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 3:
        raise InputError(f"maps must be (N, h, w) (one class's attribution maps), got shape {tuple(maps.shape)}")
    if maps.shape[0] < 4:
        raise InputError(f"SpRAy needs at least 4 maps to cluster, got {maps.shape[0]}")
    if min(maps.shape[1:]) < 1:
        raise InputError(f"maps have no pixels: shape {tuple(maps.shape)}")
    finite = torch.isfinite(maps).all() if isinstance(maps, torch.Tensor) else np.isfinite(maps).all()
    if not bool(finite):
        raise InputError("maps hold NaN or infinite values; explain again or drop those pictures")
    return maps


def _pooled(maps: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """(n, h, w) -> (n, size, size) float32: positive part, bilinear up to ``size`` when smaller, area-averaged down."""
    chunk = torch.as_tensor(maps).detach().float().cpu().clamp_min(0)[:, None]  # (n, 1, h, w)
    h, w = chunk.shape[-2:]
    if h < size or w < size:
        chunk = F.interpolate(chunk, size=(max(h, size), max(w, size)), mode="bilinear", align_corners=False)
    return F.adaptive_avg_pool2d(chunk, size)[:, 0]


def relevance_features(maps: Any, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """SpRAy's preprocessing: maps (N, h, w) -> (features (N, size²) float64, each row summing to 1 or all zero;
    evidence (N,) bool, the map had positive mass)."""
    maps = _as_maps(maps)
    rows = []
    for start in range(0, maps.shape[0], CHUNK):
        rows.append(_pooled(maps[start:start + CHUNK], size).reshape(-1, size * size).double().numpy())
    features = np.concatenate(rows)
    total = features.sum(1)
    evidence = total > 0
    features[evidence] /= total[evidence, None]
    features[~evidence] = 0.0
    return features, evidence


# -- the spectral clustering -------------------------------------------------------------------------------------
def default_neighbours(count: int) -> int:
    """The graph's k for ``count`` pictures: max(10, round(sqrt(count))), at most count - 1."""
    return int(min(count - 1, max(10, round(math.sqrt(count)))))


def knn_affinity(features: np.ndarray, neighbours: int) -> Any:
    """The mutual k-nearest-neighbour graph (scipy CSR, 0/1 weights, no self-loops): an edge when each of two
    pictures is among the other's ``neighbours`` nearest (Euclidean), plus every picture's single nearest neighbour
    so none is left alone. Mutual, not "either": a tight group of maps (a watermark) is not wired to the diffuse rest
    by the rest's one-sided links (Maier, Hein & von Luxburg 2009). Ties are broken by index."""
    from scipy import sparse
    from sklearn.neighbors import NearestNeighbors

    count = features.shape[0]
    search = NearestNeighbors(n_neighbors=neighbours + 1, algorithm="brute").fit(features)
    _, found = search.kneighbors(features)  # (n, k + 1): itself first, except among duplicates
    nearest = np.array([[j for j in row if j != i][:neighbours] for i, row in enumerate(found.tolist())])  # (n, k)
    rows = np.repeat(np.arange(count), neighbours)
    directed = sparse.csr_matrix((np.ones(rows.size), (rows, nearest.reshape(-1))), shape=(count, count))
    first = sparse.csr_matrix((np.ones(count), (np.arange(count), nearest[:, 0])), shape=(count, count))
    return ((directed.multiply(directed.T) + first + first.T) > 0).astype(np.float64).tocsr()


def spectrum(affinity: Any, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` smallest eigenvalues of the normalized Laplacian of ``affinity`` (ascending) and their
    eigenvectors (n, count), each column's largest entry made positive (a fixed sign: deterministic)."""
    from scipy import sparse

    degree = np.asarray(affinity.sum(1)).reshape(-1)
    scale = sparse.diags(1.0 / np.sqrt(np.maximum(degree, 1e-12)))
    normalized = (scale @ affinity @ scale).tocsr()  # D^-1/2 A D^-1/2: eigenvalues 1 - λ(L)
    n = normalized.shape[0]
    if n <= DENSE:
        values, vectors = np.linalg.eigh(normalized.toarray())
        values, vectors = values[::-1][:count], vectors[:, ::-1][:, :count]
    else:
        from scipy.sparse.linalg import eigsh

        start = np.random.default_rng(seed).uniform(0.5, 1.5, n)
        values, vectors = eigsh(normalized, k=count, which="LA", v0=start, tol=1e-10, maxiter=n * 20)
        order = np.argsort(-values, kind="stable")
        values, vectors = values[order], vectors[:, order]
    laplacian = np.clip(1.0 - values, 0.0, 2.0)
    peaks = np.argmax(np.abs(vectors), axis=0)
    vectors = vectors * np.sign(vectors[peaks, np.arange(vectors.shape[1])])[None, :]
    return laplacian, vectors


def eigengap_suggestion(eigenvalues: np.ndarray, max_clusters: int) -> int:
    """The number of clusters c ∈ 1..max_clusters after which the ascending ``eigenvalues`` jump the most, the
    jumps measured between their square roots (see ``gaps``)."""
    found = gaps(eigenvalues)[:max_clusters]
    return int(np.argmax(found)) + 1 if found.size else 1


def gaps(eigenvalues: np.ndarray) -> np.ndarray:
    """(m - 1,) the steps between the square roots of the ascending Laplacian ``eigenvalues``: entry c - 1 is the
    gap after c clusters. Square roots, because one strategy whose maps vary smoothly (an object anywhere in the
    picture) makes a chain-like or sheet-like graph whose eigenvalues grow like j² or j: raw gaps then widen along
    the spectrum and the largest sits at its end, while gaps between square roots stay even or shrink there and
    the step out of the near-zero eigenvalues — the separate strategies — stands out."""
    return np.diff(np.sqrt(np.clip(np.asarray(eigenvalues, dtype=np.float64), 0, None)))


def _kmeans(embedding: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    if clusters == 1:
        return np.zeros(embedding.shape[0], dtype=np.int64)
    rows = embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
    return KMeans(n_clusters=clusters, n_init=10, random_state=seed).fit_predict(rows).astype(np.int64)


def _nearest_mean(features: np.ndarray, means: np.ndarray) -> np.ndarray:
    """(n,) the index of the mean (k, d) nearest each row of ``features`` (n, d), in chunks."""
    out = np.empty(features.shape[0], dtype=np.int64)
    squared = (means**2).sum(1)
    for start in range(0, features.shape[0], CHUNK):
        block = features[start:start + CHUNK]
        out[start:start + CHUNK] = np.argmin(squared[None, :] - 2 * block @ means.T, axis=1)
    return out


def _by_size(labels: np.ndarray, clusters: int) -> np.ndarray:
    """Relabel so cluster 0 is the largest (ties: the one holding the lower first index)."""
    counts = np.bincount(labels, minlength=clusters)
    first = np.array([np.flatnonzero(labels == c)[0] if counts[c] else labels.size for c in range(clusters)])
    order = sorted(range(clusters), key=lambda c: (-counts[c], first[c]))
    relabel = np.empty(clusters, dtype=np.int64)
    relabel[order] = np.arange(clusters)
    return relabel[labels]


def _silhouette(features: np.ndarray, labels: np.ndarray, seed: int) -> float:
    from sklearn.metrics import silhouette_score

    found = np.unique(labels).size
    if found < 2 or found >= labels.size:
        return float("nan")
    sample = min(labels.size, 2000)
    return float(silhouette_score(features, labels, sample_size=sample if sample < labels.size else None, random_state=seed))


# -- pictures kept for the figure ---------------------------------------------------------------------------------
def _thumbnail(tensor: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) float -> its longest side at most THUMBNAIL pixels (bilinear, antialiased)."""
    h, w = tensor.shape[-2:]
    factor = min(1.0, THUMBNAIL / max(h, w))
    if factor >= 1.0:
        return tensor
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    return F.interpolate(tensor, size=size, mode="bilinear", antialias=True, align_corners=False)


def _pictures(pictures: Any, maps: Any, indices: list[int], count: int) -> dict[int, np.ndarray] | None:
    """uint8 thumbnails (t, t, 3) of the pictures ``indices``: from (N, 3, H, W) / (N, 1, H, W) floats in [0, 1],
    (N, H, W, 3) uint8 or floats, or the inputs of a Result (undoing its normalization)."""
    from ..images import to_uint8

    if pictures is None and isinstance(maps, Result) and maps.inputs is not None:
        chosen = maps.inputs[torch.as_tensor(indices, dtype=torch.long, device=maps.inputs.device)].detach().float().cpu()
        if maps.mean is not None and maps.std is not None:
            chosen = chosen * torch.tensor(maps.std).view(1, -1, 1, 1) + torch.tensor(maps.mean).view(1, -1, 1, 1)
    elif pictures is None:
        return None
    else:
        if len(pictures) != count:
            raise InputError(f"pictures has {len(pictures)} entries but there are {count} maps; give one picture per map")
        chosen = torch.stack([torch.as_tensor(np.asarray(pictures[i])) for i in indices])
        if chosen.dim() == 3:  # (n, H, W) grey
            chosen = chosen[:, None]
        elif chosen.dim() == 4 and chosen.shape[-1] in (1, 3, 4) and chosen.shape[1] not in (1, 3, 4):
            chosen = chosen.permute(0, 3, 1, 2)  # (n, H, W, C) -> (n, C, H, W)
        if chosen.dim() != 4:
            raise InputError(f"pictures must be (N, 3, H, W) or (N, H, W, 3), got {tuple(np.shape(pictures))}")
        chosen = chosen.float() / 255.0 if chosen.dtype == torch.uint8 else chosen.float()
    small = to_uint8(_thumbnail(chosen).clamp(0, 1))
    return {i: picture for i, picture in zip(indices, small)}


def _example_maps(maps: Any, indices: list[int], shape: tuple[int, int] | None) -> dict[int, np.ndarray]:
    """The positive part of each example's map (t, t): at its thumbnail's size, else at most THUMBNAIL pixels."""
    chosen = torch.as_tensor(np.stack([np.asarray(maps[i], dtype=np.float32) for i in indices])
                             if not isinstance(maps, torch.Tensor) else maps[indices].detach().float().cpu())
    chosen = chosen.clamp_min(0)[:, None]
    chosen = _thumbnail(chosen) if shape is None else F.interpolate(chosen, size=shape, mode="bilinear", align_corners=False)
    return {i: m[0].numpy() for i, m in zip(indices, chosen)}


# -- the entry points ------------------------------------------------------------------------------------------
def _check_int(value: Any, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise OptionError(f"{name} must be an int {bounds}, got {value!r}", field=name)
    return int(value)


def spray(maps: Any, *, pictures: Any = None, ids: Sequence[Any] | None = None, clusters: int | None = None,
          max_clusters: int = 8, size: int = 16, neighbours: int | None = None, limit: int = 5000, seed: int = 0,
          name: str = "", method: str = "") -> Strategies:
    """Spectral relevance analysis of one class's explanations (Lapuschkin et al. 2019): which strategies the
    model uses for this class, found by clustering the maps — no masks needed.

    maps: (N, h, w) attribution maps of one class's pictures (N >= 4; torch, numpy, or a ``map``/``pixels``
    Result, whose inputs then give the thumbnails and whose method names the maps); any resolution.
    pictures: the N pictures ((N, 3, H, W) floats in [0, 1] or (N, H, W, 3) uint8), only for the figure: the
    examples' thumbnails are kept. ids: a name per picture for ``records`` (default: its index).
    clusters: None uses the eigengap's suggestion, an int forces that many. max_clusters: the most the eigengap
    may suggest. size: maps are pooled to size×size. neighbours: the k of the mutual k-nearest-neighbour graph
    (None: max(10, round(sqrt(N)))). limit: at most this many pictures are clustered (a seeded sample), the rest
    join the nearest mean map. seed: the sample and k-means. name: the class; method: what made the maps.
    """
    max_clusters = _check_int(max_clusters, "max_clusters", 1, 64)
    size = _check_int(size, "size", 2, 256)
    limit = _check_int(limit, "limit", 4)
    seed = _check_int(seed, "seed", 0)
    if clusters is not None:
        clusters = _check_int(clusters, "clusters", 1, 64)
    raw = _as_maps(maps)
    total = int(raw.shape[0])
    if ids is not None and len(ids) != total:
        raise InputError(f"ids has {len(ids)} entries but there are {total} maps; give one id per map")
    if not method and isinstance(maps, Result):
        method = str(maps.method)
    if not name and isinstance(maps, Result) and maps.labels:
        found = set(maps.labels)
        name = str(found.pop()) if len(found) == 1 else ""
    features, evidence = relevance_features(raw, size)

    chosen = np.arange(total)
    if total > limit:  # a seeded uniform sample is clustered; the rest joins the nearest mean map below
        chosen = np.sort(np.random.default_rng(seed).choice(total, size=limit, replace=False))
    sample = features[chosen]
    count = chosen.size
    k = default_neighbours(count) if neighbours is None else _check_int(neighbours, "neighbours", 1, count - 1)
    wanted = max_clusters if clusters is None else max(max_clusters, clusters)
    if clusters is not None and clusters > count:
        raise OptionError(f"clusters={clusters} is more than the {count} pictures clustered", field="clusters")
    eigen_count = min(wanted + 1, count)
    eigenvalues, vectors = spectrum(knn_affinity(sample, k), eigen_count, seed)
    suggested = eigengap_suggestion(eigenvalues, min(max_clusters, eigen_count - 1))
    chosen_clusters = suggested if clusters is None else clusters
    labels = _by_size(_kmeans(vectors[:, :chosen_clusters], chosen_clusters, seed), chosen_clusters)

    assignment = np.empty(total, dtype=np.int64)
    assignment[chosen] = labels
    if count < total:
        means = np.stack([sample[labels == c].mean(0) for c in range(chosen_clusters)])
        rest = np.setdiff1d(np.arange(total), chosen)
        assignment[rest] = _nearest_mean(features[rest], means)
    mean_maps = np.stack([features[assignment == c].mean(0) if (assignment == c).any() else np.zeros(size * size)
                          for c in range(chosen_clusters)]).reshape(chosen_clusters, size, size)

    examples: dict[int, list[int]] = {}
    for c in range(chosen_clusters):
        members = np.flatnonzero(assignment == c)
        distance = ((features[members] - mean_maps[c].reshape(1, -1)) ** 2).sum(1)
        examples[c] = [int(i) for i in members[np.argsort(distance, kind="stable")[:EXAMPLES]]]
    kept = sorted({i for found in examples.values() for i in found})
    thumbnails = _pictures(pictures, maps, kept, total) if kept else None
    shape = next(iter(thumbnails.values())).shape[:2] if thumbnails else None
    return Strategies(assignment=assignment, eigenvalues=eigenvalues, suggested=suggested, mean_maps=mean_maps.astype(np.float32),
                      examples=examples, pictures=thumbnails, example_maps=_example_maps(raw, kept, shape),
                      ids=None if ids is None else list(ids), name=str(name), method=str(method),
                      separation=_silhouette(sample, labels, seed), evidence=evidence, neighbours=k, clustered=int(count),
                      forced=clusters is not None, seed=seed)


def spray_classes(maps: Any, classes: Any, class_names: Sequence[str] | None = None, *, pictures: Any = None,
                  ids: Sequence[Any] | None = None, min_pictures: int = 4, **options: Any) -> dict[str, Strategies]:
    """:func:`spray` per class: maps (N, h, w) (or a Result) and ``classes`` (N,) the class each map explains
    (say, the predicted one) -> class name -> Strategies, in class order. Classes with fewer than ``min_pictures``
    maps are left out. ``ids`` default to the pictures' indices in the whole set; ``options`` go to ``spray``."""
    min_pictures = _check_int(min_pictures, "min_pictures", 4)
    is_result = isinstance(maps, Result)
    count = len(maps) if is_result else int(_as_maps(maps).shape[0])
    classes = np.asarray(torch.as_tensor(classes).cpu() if isinstance(classes, torch.Tensor) else classes).reshape(-1)
    if classes.size != count:
        raise InputError(f"classes has {classes.size} entries but there are {count} maps; give the class of each map")
    if pictures is not None and len(pictures) != count:
        raise InputError(f"pictures has {len(pictures)} entries but there are {count} maps; give one picture per map")
    ids = list(range(count)) if ids is None else list(ids)
    if len(ids) != count:
        raise InputError(f"ids has {len(ids)} entries but there are {count} maps; give one id per map")
    out: dict[str, Strategies] = {}
    for c in sorted(set(classes.tolist())):
        rows = np.flatnonzero(classes == c)
        if rows.size < min_pictures:
            continue
        label = class_names[int(c)] if class_names is not None and 0 <= int(c) < len(class_names) else str(c)
        part = maps[rows.tolist()] if is_result else maps[torch.as_tensor(rows)] if isinstance(maps, torch.Tensor) \
            else np.asarray(maps)[rows]
        subset = None if pictures is None else [pictures[i] for i in rows.tolist()]
        out[label] = spray(part, pictures=subset, ids=[ids[i] for i in rows.tolist()], name=label, **options)
    return out
