"""Tokenize a Ray Data dataset of video paths on a Ray cluster (the optional `ray` extra).

`tokenize_dataset(ds, ...)` maps a pool of actors over the dataset's `path` column with `map_batches`:
each actor loads one `Tokenizer` when it starts and keeps it for every file it is given. Per input row
it either writes `<out_dir>/<stem>.itok` (like `infotok compress ... -o DIR`) or, without `out_dir`,
returns the tokens themselves. Each row reports its own status, so one bad file does not fail the
dataset. `tokenize_paths(paths, ...)` builds the dataset from a list of paths first, planned by the command
line's batch rules (io/batch.py): repeats dropped, `shard="K/N"` keeps the same inputs as `--shard K/N`, and
two inputs that would write the same `<stem>.itok` are refused before any work. Output names, skip-existing
and the per-file outcome are the same rules too.

Output rows: `path`, `status` ("ok", "skipped" or "failed"), `error` (message or ""), `output` (the
.itok path or ""), `frames`, `tokens_kept`, `tokens_possible`; without `out_dir` also `tokens` (int32
`[sum of t, h, w]`, every window's latent frames one after the other, -1 at dropped positions),
`window_latent_frames` (int32 `[windows]`, how many of those latent frames each window has) and
`window_frame_ranges` (int64 `[windows, 2]`, first source frame and frame count of each window).

Ray itself is imported only here (`pip install 'infotok-cli[ray]'`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import one_line
from ..io.batch import BatchItem, gather, output_path, plan, run

if TYPE_CHECKING:  # pragma: no cover
    import ray.data

OUTPUT_COLUMNS = ("path", "status", "error", "output", "frames", "tokens_kept", "tokens_possible")


class TokenizeWorker:
    """A Ray Data actor: one model for its whole life, one file per row."""

    def __init__(self, model: str | None, device: str, out_dir: str | None, path_column: str,
                 skip_existing: bool, options: dict[str, Any]):
        from ..coding.tokenizer import Tokenizer

        self.tok = Tokenizer(model, device)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.path_column = path_column
        self.skip_existing = skip_existing
        self.options = options

    def tokenize(self, item: BatchItem) -> dict[str, Any]:
        """The row's measured columns for one input (its status and names are added from the outcome)."""
        from ..io.video import iter_frames

        path = str(item.input)
        if item.output is not None:
            r = self.tok.compress_file(path, item.output, **self.options)
            return {"frames": r.frames, "tokens_kept": r.tokens_kept, "tokens_possible": r.tokens_max}
        # Token arrays in the rows: the clip is decoded into memory (dataset clips are short).
        clip = self.tok.encode(np.stack(list(iter_frames(path))), **self.options)
        return {"frames": clip.num_frames, "tokens_kept": clip.tokens_kept,
                "tokens_possible": clip.tokens_possible,
                "tokens": np.concatenate([w.tokens for w in clip.windows]),
                "window_latent_frames": np.array([w.latent_shape[0] for w in clip.windows], dtype=np.int32),
                "window_frame_ranges": np.array([[w.frame_start, w.frame_count] for w in clip.windows],
                                                dtype=np.int64)}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        # one item per row, named as the command line names outputs; run() turns an exception into that
        # row's failure and skips an existing output, as a command-line batch does
        paths = [str(p) for p in batch[self.path_column]]  # the rows keep each path as given
        items = [BatchItem(Path(p), None if self.out_dir is None else output_path(p, self.out_dir, ".itok"))
                 for p in paths]
        rows = []
        for path, o in zip(paths, run(items, self.tokenize, skip_existing=self.skip_existing)):
            row = {"path": path, "status": o.status,
                   "error": "" if o.error is None else one_line(o.error),
                   "output": "" if o.item.output is None or o.status == "failed" else str(o.item.output)}
            rows.append({**row, **(o.result or {"frames": 0, "tokens_kept": 0, "tokens_possible": 0})})
        if self.out_dir is None:  # token columns for every row (empty for failed ones)
            for r in rows:
                r.setdefault("tokens", np.zeros((0, 0, 0), dtype=np.int32))
                r.setdefault("window_latent_frames", np.zeros(0, dtype=np.int32))
                r.setdefault("window_frame_ranges", np.zeros((0, 2), dtype=np.int64))
        columns = list(rows[0]) if rows else list(OUTPUT_COLUMNS)
        return {c: [r[c] for r in rows] for c in columns}


def tokenize_dataset(ds: ray.data.Dataset, *, out_dir: str | os.PathLike | None = None, model: str | None = None,
                     device: str = "auto", workers: int = 1, num_gpus: float | None = None,
                     cpus_per_worker: float = 1, path_column: str = "path", skip_existing: bool = False,
                     **options: Any) -> ray.data.Dataset:
    """Tokenize every video named in `ds[path_column]` (lazy: Ray runs it when the result is consumed).

    `workers` actors each load the model once (`model`: shipped name or .safetensors path, which every
    worker must be able to read); `num_gpus` is the GPUs per worker, by default 1 when the Ray cluster
    has GPUs and 0 otherwise (with `device="auto"` a worker given a GPU runs on CUDA). `options` are the
    compress options (beta, strategy, window, overlap; with `out_dir` also target_psnr, force, ...). With
    `out_dir` (a folder every worker can write to) each video becomes `<out_dir>/<stem>.itok`; without it
    the rows carry the tokens (see the module docstring).
    """
    import ray
    import ray.data

    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    if num_gpus is None:
        num_gpus = 1 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return ds.map_batches(
        TokenizeWorker,
        batch_size=1,  # one video per call: videos are large and of very different lengths
        compute=ray.data.ActorPoolStrategy(size=workers),
        fn_constructor_kwargs={"model": None if model is None else str(model), "device": device,
                               "out_dir": None if out_dir is None else str(out_dir), "path_column": path_column,
                               "skip_existing": skip_existing, "options": options},
        num_cpus=cpus_per_worker,
        num_gpus=num_gpus,
    )


def tokenize_paths(paths: Iterable[str | os.PathLike], *, shard: str | tuple[int, int] | None = None,
                   **kwargs: Any) -> ray.data.Dataset:
    """`tokenize_dataset` over a dataset made from a list of video paths, planned as a command-line batch:
    without repeats, restricted to `shard` ("K/N", as `--shard K/N`), and with `out_dir`, refused up front
    (ValueError) when two inputs would write the same output."""
    import ray.data

    inputs = gather(paths, shard=shard)
    out_dir = kwargs.get("out_dir")
    plan(inputs, None if out_dir is None else Path(out_dir), ".itok")  # the name clash check, before any work
    return tokenize_dataset(ray.data.from_items([{"path": str(p)} for p in inputs]), **kwargs)
