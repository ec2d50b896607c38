"""Explanations of a whole dataset on disk: written shard by shard as they are made, read back lazily.

A folder written by :func:`convscope.explain_dataset`::

    manifest.json          what was explained, how (model fingerprint, method, options) and how it is cut in shards
    shards/00000.npz       maps (n, h, w) float16 (or float32), each divided by its ``scale`` (n,) so float16 keeps
                           ~3 significant digits whatever the map's units; ``index`` (n,); ``thumbnails`` (n, t, t, 3)
    shards/00000.parquet   one row per picture (see ``COLUMNS``): written last, so a shard with its table is complete
    explanations.parquet   the whole table, written when every shard is (row groups = shards)

A shard is a fixed range of pictures (``shard_size`` of them, cut in fixed batches), so any rerun computes a missing
shard exactly as an uninterrupted run would: resuming writes only what is missing and never duplicates. Every file
is written to a temporary name and renamed into place, so a crash leaves whole files or none.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConvscopeError, InputError
from .result import Displayable

__all__ = ["COLUMNS", "FORMAT", "Explanations", "Shard", "is_explanations", "open_explanations", "require_pyarrow", "schema"]

FORMAT = "convscope.explanations/1"
MANIFEST = "manifest.json"
TABLE = "explanations.parquet"
SHARDS = "shards"
COLUMNS = {  # name -> what it holds (the Parquet table, one row per picture)
    "index": "the picture's position in the dataset (0-based; the order the dataset gives)",
    "id": "the picture's path, or '#<index>' when it has none",
    "label": "the true class as the dataset names it (null when unknown)",
    "label_index": "the true class's index in the model's classes (-1 when unknown)",
    "predicted": "the model's top-1 class index", "predicted_label": "its name",
    "probability": "the top-1 probability (softmax)",
    "top_classes": "the top-k class indices", "top_probabilities": "their probabilities",
    "explained": "the class the map explains", "explained_label": "its name",
    "explained_probability": "its probability",
    "map_min": "the map's smallest value", "map_max": "its largest", "map_mean": "its mean",
    "positive_share": "positive mass / absolute mass (1: all evidence for the class)",
    "peak_y": "the peak's row as a share of the height (0 top, 1 bottom)", "peak_x": "its column (0 left, 1 right)",
    "shard": "the shard file holding the map",
}


def require_pyarrow() -> Any:
    """pyarrow with its parquet and csv modules (a dependency of convscope; a clear line if it is missing)."""
    try:
        import pyarrow
        import pyarrow.csv
        import pyarrow.parquet
    except ImportError:
        raise ConvscopeError("explanations of a dataset are stored as Parquet: pip install pyarrow") from None
    return pyarrow


def is_explanations(path: Any) -> bool:
    """Whether ``path`` is a folder written by ``explain_dataset``."""
    if isinstance(path, Explanations):
        return True
    if not isinstance(path, (str, os.PathLike)):
        return False
    manifest = Path(path).expanduser() / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


@dataclass
class Shard:
    """One shard as computed (before it is written): pictures ``index`` (n,), their ``maps`` (n, h, w) float32 and
    ``thumbnails`` (n, t, t, 3) uint8 or None, and the table's ``columns`` (name -> n values)."""

    number: int
    index: np.ndarray
    maps: np.ndarray
    thumbnails: np.ndarray | None
    columns: dict[str, Any]

    def encode(self, dtype: str) -> tuple[bytes, bytes]:
        """(npz bytes, parquet bytes): what is written, the same wherever it was computed."""
        pa = require_pyarrow()
        table = pa.Table.from_pydict(self.columns, schema=schema())
        flat = self.maps.reshape(len(self.index), -1)
        scale = np.abs(flat).max(1) if flat.size else np.zeros(0, np.float32)
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        stored = (self.maps / scale[:, None, None]).astype(np.float16 if dtype == "float16" else np.float32)
        arrays = {"index": self.index.astype(np.int64), "maps": stored, "scale": scale}
        if self.thumbnails is not None:
            arrays["thumbnails"] = self.thumbnails
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        sink = pa.BufferOutputStream()
        pa.parquet.write_table(table, sink, compression="zstd")
        return buffer.getvalue(), sink.getvalue().to_pybytes()


def schema() -> Any:
    """The table's Arrow schema (fixed, so every shard's table has the same one; see ``COLUMNS``)."""
    pa = require_pyarrow()
    f32, i32 = pa.float32(), pa.int32()
    return pa.schema([("index", pa.int64()), ("id", pa.string()), ("label", pa.string()), ("label_index", i32),
                      ("predicted", i32), ("predicted_label", pa.string()), ("probability", f32),
                      ("top_classes", pa.list_(i32)), ("top_probabilities", pa.list_(f32)),
                      ("explained", i32), ("explained_label", pa.string()), ("explained_probability", f32),
                      ("map_min", f32), ("map_max", f32), ("map_mean", f32), ("positive_share", f32),
                      ("peak_y", f32), ("peak_x", f32), ("shard", i32)])


def _jsonable(value: Any) -> Any:
    """Manifest values: tensors and arrays by their fingerprint, anything else unknown by its text."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        import hashlib

        array = np.ascontiguousarray(value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value)
        return "array:" + hashlib.sha256(array.tobytes() + str(array.shape).encode()).hexdigest()[:16]
    if isinstance(value, os.PathLike):
        return str(value)
    return repr(value)


def _write_atomic(path: Path, payload: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


@dataclass
class Explanations(Displayable):
    """A folder of explanations (see the module doc). ``len`` pictures; ``table()`` the Parquet table (pyarrow);
    ``maps(indices)`` (n, h, w) float32 in the method's units; ``shards()`` streams (index, maps, thumbnails) one
    shard at a time (bounded memory); ``thumbnails(indices)``; ``summary()``. Kind "explanations"."""

    kind = "explanations"

    folder: Path
    manifest: dict[str, Any] = field(repr=False)

    # -- writing ---------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, folder: str | os.PathLike, manifest: dict[str, Any], *, overwrite: bool = False) -> Explanations:
        """Open ``folder`` for writing the run ``manifest`` describes: a new folder, or the same run resumed. A folder
        holding another run is refused (one line saying what differs) unless ``overwrite``."""
        where = Path(folder).expanduser()
        if where.exists() and not where.is_dir():
            raise InputError(f"{where} is a file; out= takes a folder")
        manifest = json.loads(json.dumps({"format": FORMAT, **manifest, "complete": False}, sort_keys=True, default=_jsonable))
        old = where / MANIFEST
        if old.is_file() and not overwrite:
            try:
                before = json.loads(old.read_text())
            except ValueError:
                raise InputError(f"{old} is not a convscope manifest; pass overwrite=True or another folder") from None
            manifest["map_shape"] = before.get("map_shape")
            differs = [k for k in sorted(set(manifest) | set(before)) if k not in ("complete", "map_shape")
                       and before.get(k) != manifest.get(k)]
            if differs:
                shown = ", ".join(f"{k} ({_short(before.get(k))} there, {_short(manifest.get(k))} now)" for k in differs[:3])
                raise InputError(f"{where} holds explanations of another run ({shown}); pass overwrite=True (--overwrite) to "
                                 f"replace them, or another folder")
        elif where.is_dir() and any(where.iterdir()) and not old.is_file() and not overwrite:
            raise InputError(f"{where} is not empty and holds no convscope explanations; pick an empty or new folder")
        if overwrite and where.is_dir():
            _clear(where)
        (where / SHARDS).mkdir(parents=True, exist_ok=True)
        for stale in (where / SHARDS).glob("*.tmp"):
            stale.unlink()
        _write_atomic(where / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
        return cls(where, manifest)

    @property
    def shard_count(self) -> int:
        size = int(self.manifest["shard_size"])
        return -(-int(self.manifest["count"]) // size)

    def shard_range(self, number: int) -> tuple[int, int]:
        size = int(self.manifest["shard_size"])
        return number * size, min(int(self.manifest["count"]), (number + 1) * size)

    def _paths(self, number: int) -> tuple[Path, Path]:
        stem = self.folder / SHARDS / f"{number:05d}"
        return stem.with_suffix(".npz"), stem.with_suffix(".parquet")

    def done(self) -> list[int]:
        """Shards already written whole (their table is written last)."""
        return [n for n in range(self.shard_count) if all(p.is_file() for p in self._paths(n))]

    def missing(self) -> list[int]:
        written = set(self.done())
        return [n for n in range(self.shard_count) if n not in written]

    def write(self, number: int, encoded: tuple[bytes, bytes], map_shape: Sequence[int] | None = None) -> bool:
        """Write shard ``number`` (npz, then its table). A shard already written is left as it is (False): a shard
        computed twice — a retried task — is stored once. ``map_shape``: the maps' (h, w), kept in the manifest."""
        maps_path, table_path = self._paths(number)
        if table_path.is_file() and maps_path.is_file():
            return False
        if self.manifest.get("map_shape") is None and map_shape is not None:
            self.manifest["map_shape"] = [int(v) for v in map_shape]
            _write_atomic(self.folder / MANIFEST, json.dumps(self.manifest, indent=1, sort_keys=True).encode())
        _write_atomic(maps_path, encoded[0])
        _write_atomic(table_path, encoded[1])
        return True

    def finish(self) -> None:
        """Every shard written: the whole table in one file (streamed shard by shard) and the manifest marked complete."""
        if self.missing():
            return
        pa = require_pyarrow()
        temporary = self.folder / (TABLE + ".tmp")
        writer = None
        try:
            for number in range(self.shard_count):
                part = pa.parquet.read_table(self._paths(number)[1])
                if writer is None:
                    writer = pa.parquet.ParquetWriter(temporary, part.schema, compression="zstd")
                writer.write_table(part)
        finally:
            if writer is not None:
                writer.close()
        os.replace(temporary, self.folder / TABLE)
        self.manifest = {**self.manifest, "complete": True}
        _write_atomic(self.folder / MANIFEST, json.dumps(self.manifest, indent=1, sort_keys=True).encode())

    # -- reading ---------------------------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    def __len__(self) -> int:
        return int(self.manifest["count"])

    @property
    def method(self) -> str:
        return str(self.manifest["method"])

    @property
    def class_names(self) -> list[str] | None:
        return self.manifest.get("class_names")

    def table(self, columns: Sequence[str] | None = None) -> Any:
        """The table of the pictures written so far (pyarrow.Table, sorted by ``index``); ``.to_pandas()`` for a DataFrame."""
        pa = require_pyarrow()
        whole = self.folder / TABLE
        if self.complete and whole.is_file():
            return pa.parquet.read_table(whole, columns=list(columns) if columns else None)
        parts = [pa.parquet.read_table(self._paths(n)[1], columns=list(columns) if columns else None) for n in self.done()]
        if not parts:
            raise InputError(f"{self.folder}: no shard written yet")
        return pa.concat_tables(parts)

    def _load(self, number: int) -> dict[str, np.ndarray]:
        with np.load(self._paths(number)[0]) as found:
            return {k: found[k] for k in found.files}

    def shards(self, *, thumbnails: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """(index (n,), maps (n, h, w) float32 in the method's units, thumbnails (n, t, t, 3) or None) per written
        shard, in order: one shard in memory at a time."""
        for number in self.done():
            found = self._load(number)
            maps = found["maps"].astype(np.float32) * found["scale"][:, None, None]
            yield found["index"], maps, found.get("thumbnails") if thumbnails else None

    def _gather(self, indices: Sequence[int], key: str) -> np.ndarray:
        wanted = np.asarray(list(indices), dtype=np.int64)
        if wanted.size and (wanted.min() < 0 or wanted.max() >= len(self)):
            raise InputError(f"picture indices must be in 0..{len(self) - 1}")
        size = int(self.manifest["shard_size"])
        out: list[Any] = [None] * len(wanted)
        for number in sorted(set((wanted // size).tolist())):
            found = self._load(number) if all(p.is_file() for p in self._paths(number)) else None
            if found is None:
                raise InputError(f"{self.folder}: shard {number} is not written yet (resume the run)")
            if key == "thumbnails" and "thumbnails" not in found:
                raise InputError(f"{self.folder} keeps no thumbnails (explained with thumbnail=0)")
            values = found["maps"].astype(np.float32) * found["scale"][:, None, None] if key == "maps" else found[key]
            start = number * size
            for k in np.flatnonzero(wanted // size == number):
                out[k] = values[int(wanted[k]) - start]
        return np.stack(out) if out else np.zeros((0,), np.float32)

    def maps(self, indices: Sequence[int] | None = None) -> torch.Tensor:
        """(n, h, w) float32 maps of the pictures ``indices`` (default: all — mind the memory on a large dataset)."""
        return torch.from_numpy(self._gather(range(len(self)) if indices is None else indices, "maps"))

    def thumbnails(self, indices: Sequence[int]) -> np.ndarray:
        """(n, t, t, 3) uint8 thumbnails of the pictures ``indices``."""
        return self._gather(indices, "thumbnails")

    def summary(self) -> dict[str, Any]:
        table = self.table(["explained_label", "predicted", "label_index"])
        explained = table.column("explained_label").to_pylist()
        counts: dict[str, int] = {}
        for name in explained:
            counts[name] = counts.get(name, 0) + 1
        labelled = [(p, y) for p, y in zip(table.column("predicted").to_pylist(), table.column("label_index").to_pylist()) if y >= 0]
        return {"folder": str(self.folder), "method": self.method, "layer": self.manifest.get("layer"),
                "pictures": len(self), "written": table.num_rows, "complete": self.complete,
                "shards": self.shard_count, "map_shape": self.manifest.get("map_shape"),
                "accuracy": float(np.mean([p == y for p, y in labelled])) if labelled else None,
                "explained": dict(sorted(counts.items(), key=lambda kv: -kv[1])[:20])}

    def text(self) -> str:
        info = self.summary()
        lines = [f"{info['written']:,} of {info['pictures']:,} pictures explained by {info['method']}"
                 + (f" at {info['layer']}" if info["layer"] else "") + (" (complete)" if info["complete"] else " (resume to finish)"),
                 f"folder: {info['folder']} — explanations.parquet (one row per picture) and shards/ (maps "
                 f"{'x'.join(str(v) for v in info['map_shape'] or [])}, {self.manifest.get('dtype')})"]
        if info["accuracy"] is not None:
            lines.append(f"top-1 accuracy on the labelled pictures: {info['accuracy']:.1%}")
        lines.append("explained classes: " + ", ".join(f"{k} {v:,}" for k, v in info["explained"].items()))
        return "\n".join(lines)


def open_explanations(folder: str | os.PathLike | Explanations) -> Explanations:
    """The explanations written in ``folder`` by ``explain_dataset`` (complete or not)."""
    if isinstance(folder, Explanations):
        return folder
    where = Path(folder).expanduser()
    if not is_explanations(where):
        raise InputError(f"{where}: not a folder written by explain_dataset (no {MANIFEST})")
    return Explanations(where, json.loads((where / MANIFEST).read_text()))


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _clear(folder: Path) -> None:
    for path in (folder / SHARDS).glob("*"):
        path.unlink()
    for name in (MANIFEST, TABLE):
        (folder / name).unlink(missing_ok=True)
