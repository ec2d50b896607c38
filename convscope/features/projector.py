"""Export an Embedding for TensorBoard's Embedding Projector (Smilkov et al. 2016).

``export_projector(embedding, logdir)`` writes exactly what the projector plugin reads from a log
folder — no TensorFlow and no checkpoint needed:

- ``tensors.tsv``: one row of tab-separated floats per image (the plugin parses each line with ``float``);
- ``metadata.tsv``: a header row ``label<TAB>prediction<TAB>path`` (the plugin takes the first line as a
  header when it holds a tab: several columns need one), then one row per image;
- ``sprite.png``: the thumbnails in a square grid of ceil(√N) per row, row-major, at most 8,192 px a
  side (the projector's limit), the thumbnail side shrunk to fit;
- ``projector_config.pbtxt``: a ``ProjectorConfig`` in protobuf text format, as ``text_format`` writes it.

Open with ``tensorboard --logdir LOGDIR`` → Projector tab.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConvscopeError, InputError
from .embed import Embedding, Projection, grid_side

__all__ = ["CONFIG_NAME", "METADATA_COLUMNS", "SPRITE_LIMIT", "export_projector", "projector_config_text", "sprite_image"]

CONFIG_NAME = "projector_config.pbtxt"
METADATA_COLUMNS = ("label", "prediction", "path")
SPRITE_LIMIT = 8192  # TensorBoard's projector refuses sprites larger than this (px per side)


def _cell(value: Any) -> str:
    """A metadata value on one line without tabs (the TSV separators)."""
    return "" if value is None else re.sub(r"[\t\r\n]+", " ", str(value))


def _quoted(text: str) -> str:
    """A protobuf text-format string literal (C escapes; non-ASCII as octal bytes, as text_format writes it)."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char in ('"', "'", "\\"):
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def sprite_image(thumbnails: np.ndarray, *, limit: int = SPRITE_LIMIT) -> np.ndarray:
    """Thumbnails (N, t, t, 3) uint8 -> a square sprite (g·s, g·s, 3), g = ceil(√N) per row, row-major,
    s = min(t, limit // g): shrunk (area-averaged) when g·t would pass ``limit``; unused cells black."""
    if thumbnails.ndim != 4 or thumbnails.shape[1] != thumbnails.shape[2] or thumbnails.shape[3] != 3:
        raise InputError(f"thumbnails must be (N, t, t, 3) uint8, got shape {thumbnails.shape}")
    count, side = thumbnails.shape[0], thumbnails.shape[1]
    cells = grid_side(count)
    size = min(side, limit // cells)
    if size < 1:
        raise InputError(f"{count} images do not fit a {limit}-px sprite even at 1 px each; export fewer images")
    if size != side:
        import torch
        import torch.nn.functional as F

        small = F.interpolate(torch.from_numpy(thumbnails).permute(0, 3, 1, 2).float(), size=(size, size), mode="area")
        thumbnails = small.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    sprite = np.zeros((cells * size, cells * size, 3), dtype=np.uint8)
    for index in range(count):
        row, col = divmod(index, cells)
        sprite[row * size:(row + 1) * size, col * size:(col + 1) * size] = thumbnails[index]
    return sprite


def projector_config_text(embeddings: list[dict[str, Any]]) -> str:
    """``ProjectorConfig`` text for embeddings given as dicts (tensor_name, metadata_path, tensor_shape,
    sprite_path, sprite_dim, tensor_path), fields in field-number order as ``text_format`` prints them."""
    lines = []
    for entry in embeddings:
        lines.append("embeddings {")
        lines.append(f"  tensor_name: {_quoted(entry['tensor_name'])}")
        if entry.get("metadata_path"):
            lines.append(f"  metadata_path: {_quoted(entry['metadata_path'])}")
        for dim in entry.get("tensor_shape", ()):
            lines.append(f"  tensor_shape: {int(dim)}")
        if entry.get("sprite_path"):
            lines += ["  sprite {", f"    image_path: {_quoted(entry['sprite_path'])}"]
            lines += [f"    single_image_dim: {int(d)}" for d in entry["sprite_dim"]]
            lines.append("  }")
        lines.append(f"  tensor_path: {_quoted(entry['tensor_path'])}")
        lines.append("}")
    return "\n".join(lines) + "\n"


def _write_tsv(path: Path, values: np.ndarray) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        np.savetxt(handle, values, fmt="%.7g", delimiter="\t")


def export_projector(embedding: Embedding, logdir: str | os.PathLike, *, coords: Projection | np.ndarray | None = None,
                     name: str | None = None, sprite: bool = True) -> Path:
    """Write TensorBoard projector files for ``embedding`` into ``logdir`` -> the path of the config.

    Options:
        coords: a 2-D map (a Projection or (N, 2) array, e.g. from tsne) exported as a second tensor
            ("... 2-D"), sharing the metadata and sprite, so the projector can show convscope's own map.
        name: the tensor's name in the projector (default: "<model>: <layer>").
        sprite: write sprite.png from the thumbnails (when the embedding has them).
    """
    if not isinstance(embedding, Embedding):
        raise ConvscopeError(f"export_projector takes an Embedding from cs.embed, got {type(embedding).__name__}")
    count = len(embedding)
    if count == 0:
        raise InputError("the embedding has no points to export")
    folder = Path(logdir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder; pass a folder for the projector files")
    folder.mkdir(parents=True, exist_ok=True)

    _write_tsv(folder / "tensors.tsv", embedding.features)
    predicted = embedding.predicted_labels or [None] * count
    rows = ["\t".join(METADATA_COLUMNS)]
    rows += ["\t".join(_cell(v) for v in row) for row in zip(embedding.labels, predicted, embedding.paths)]
    (folder / "metadata.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8", newline="\n")

    title = name or f"{embedding.model}: {embedding.layer}"
    entry: dict[str, Any] = {"tensor_name": title, "tensor_path": "tensors.tsv", "metadata_path": "metadata.tsv",
                             "tensor_shape": embedding.features.shape}
    if sprite and embedding.thumbnails is not None:
        from PIL import Image

        picture = sprite_image(embedding.thumbnails)
        Image.fromarray(picture).save(folder / "sprite.png")
        cell = picture.shape[0] // grid_side(count)
        entry.update(sprite_path="sprite.png", sprite_dim=(cell, cell))
    entries = [entry]
    if coords is not None:
        points = coords.coords if isinstance(coords, Projection) else np.asarray(coords, dtype=np.float32)
        if points.shape != (count, 2):
            raise InputError(f"coords must be (N, 2) = ({count}, 2) for this embedding, got {tuple(points.shape)}")
        _write_tsv(folder / "coords.tsv", points)
        method = coords.title if isinstance(coords, Projection) else "2-D"
        entries.append({**entry, "tensor_name": f"{title} ({method})", "tensor_path": "coords.tsv",
                        "tensor_shape": points.shape})
    config = folder / CONFIG_NAME
    config.write_text(projector_config_text(entries), encoding="utf-8", newline="\n")
    return config
