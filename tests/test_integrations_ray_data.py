"""The Ray Data module on a local Ray instance (2 CPUs) with three real clips and a corrupt one: .itok files
written by the workers, and token arrays returned in the rows, both equal to what the API produces; also
with an imported InfoTok-Flex model (the small conformance fixture), named as `--model` names it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray

import infotok_cli
from infotok_cli.api import Tokenizer
from infotok_cli.io.batch import gather
from infotok_cli.io.video import iter_frames
from infotok_cli.ray_data import TokenizeWorker, tokenize_paths

OPTIONS = {"window": 9, "overlap": 1, "beta": 0.5, "strategy": "window"}
FLEX_FIXTURE = Path(__file__).resolve().parent / "data" / "infotok-flex"


@pytest.fixture(scope="module")
def model_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model store (INFOTOK_HOME) of the driver and of every worker: imported models are found by name."""
    return tmp_path_factory.mktemp("infotok-home")


@pytest.fixture(scope="module")
def local_ray(model_home: Path) -> Iterator[None]:
    # One thread per worker process (tiny tensors; see conftest.py); workers inherit the environment, so
    # it is set before Ray starts.
    env = {"OMP_NUM_THREADS": "1", "INFOTOK_HOME": str(model_home)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def videos(make_shared_video) -> list[Path]:
    paths = [make_shared_video(40, 24, 9, "ray-a.mp4"), make_shared_video(32, 32, 13, "ray-b.mp4", kind="static"),
             make_shared_video(24, 16, 5, "ray-c.mp4", kind="noise")]
    corrupt = paths[0].parent / "ray-corrupt.mp4"
    corrupt.write_bytes(b"\x00" * 100)
    return [*paths, corrupt]


def test_workers_write_itok_files_and_return_tokens(local_ray: None, videos: list[Path], tiny_weights: Path,
                                                    tmp_path: Path) -> None:
    tok = Tokenizer(tiny_weights, "cpu")
    out = tmp_path / "itok"
    rows = tokenize_paths(videos, out_dir=out, model=tiny_weights, device="cpu", workers=2, **OPTIONS).take_all()
    by_path = {r["path"]: r for r in rows}
    assert sorted(by_path) == sorted(map(str, videos))
    assert by_path[str(videos[3])]["status"] == "failed" and "ray-corrupt.mp4" in by_path[str(videos[3])]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["ray-a.itok", "ray-b.itok", "ray-c.itok"]
    for video in videos[:3]:
        row = by_path[str(video)]
        assert row["status"] == "ok" and row["output"] == str(out / f"{video.stem}.itok")
        expected = tok.encode(np.stack(list(iter_frames(video))), **OPTIONS)
        with infotok_cli.load(row["output"]) as tf:
            assert row["tokens_kept"] == tf.tokens_kept == expected.tokens_kept
            assert all(np.array_equal(a.tokens, b.tokens) for a, b in zip(tf.windows, expected.windows))

    # Without an output folder the rows carry the tokens: windows' latent frames one after the other.
    rows = tokenize_paths(videos, model=tiny_weights, device="cpu", **OPTIONS).take_all()
    by_path = {r["path"]: r for r in rows}
    for video in videos[:3]:
        row = by_path[str(video)]
        expected = tok.encode(np.stack(list(iter_frames(video))), **OPTIONS)
        assert row["status"] == "ok" and row["frames"] == expected.num_frames
        assert np.array_equal(np.asarray(row["tokens"]), np.concatenate([w.tokens for w in expected.windows]))
        assert np.asarray(row["window_latent_frames"]).tolist() == [w.latent_shape[0] for w in expected.windows]
        assert np.asarray(row["window_frame_ranges"]).tolist() == [[w.frame_start, w.frame_count]
                                                                   for w in expected.windows]
    assert by_path[str(videos[3])]["status"] == "failed"


def test_rows_follow_the_command_lines_batch_rules(videos: list[Path], tiny_weights: Path, tmp_path: Path) -> None:
    """One actor called directly (no cluster): outputs named <stem>.itok, an existing one skipped, a bad file
    failed in its row, every path kept as given."""
    out = tmp_path / "itok"
    out.mkdir()
    (out / "ray-b.itok").write_bytes(b"already there")
    worker = TokenizeWorker(str(tiny_weights), "cpu", str(out), "path", True, OPTIONS)
    columns = worker({"path": np.array([str(v) for v in videos])})
    rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    assert [r["path"] for r in rows] == [str(v) for v in videos]
    assert [r["status"] for r in rows] == ["ok", "skipped", "ok", "failed"]
    assert [r["output"] for r in rows] == [*(str(out / f"ray-{k}.itok") for k in "abc"), ""]
    assert (out / "ray-b.itok").read_bytes() == b"already there" and rows[1]["frames"] == 0
    assert "ray-corrupt.mp4" in rows[3]["error"] and rows[3]["tokens_kept"] == 0


def test_paths_are_planned_like_a_command_line_batch(local_ray: None, videos: list[Path], tiny_weights: Path,
                                                     tmp_path: Path) -> None:
    clash = tmp_path / "other" / "ray-a.mkv"
    with pytest.raises(ValueError, match="would both write"):  # refused before any work
        tokenize_paths([videos[0], clash], out_dir=tmp_path / "clash", model=tiny_weights)
    assert not (tmp_path / "clash").exists()
    listed = [*videos[:3], videos[0]]  # a repeat is dropped before sharding, as on the command line
    rows = tokenize_paths(listed, shard="1/2", out_dir=tmp_path / "s1", model=tiny_weights, device="cpu",
                          **OPTIONS).take_all()
    assert sorted(r["path"] for r in rows) == sorted(map(str, gather(listed, shard="1/2"))) == [str(videos[1])]
    assert [r["status"] for r in rows] == ["ok"]


def test_workers_run_an_imported_flex_model(local_ray: None, videos: list[Path], tmp_path: Path) -> None:
    """The small InfoTok-Flex fixture imported into the store: workers load it by name and code every clip
    as the API does; the .itok files name it and record its weights."""
    from infotok_cli.model.flex_store import import_checkpoint

    imported = import_checkpoint(FLEX_FIXTURE / "small-weights.safetensors", "flex-ray",
                                 config=FLEX_FIXTURE / "small-config.json", force=True)
    tok = Tokenizer("flex-ray", "cpu")
    assert tok.sha256 == imported["sha256"]
    out = tmp_path / "itok"
    rows = tokenize_paths(videos, out_dir=out, model="flex-ray", device="cpu", workers=2, **OPTIONS).take_all()
    by_path = {r["path"]: r for r in rows}
    assert by_path[str(videos[3])]["status"] == "failed"
    for video in videos[:3]:
        row = by_path[str(video)]
        assert row["status"] == "ok", row["error"]
        expected = tok.encode(np.stack(list(iter_frames(video))), **OPTIONS)
        with infotok_cli.load(row["output"]) as tf:
            assert tf.model_name == "flex-ray" and tf.weights_sha256 == imported["sha256"]
            assert row["tokens_kept"] == tf.tokens_kept == expected.tokens_kept
            assert all(np.array_equal(a.tokens, b.tokens) for a, b in zip(tf.windows, expected.windows))

    rows = tokenize_paths(videos[:3], model="flex-ray", device="cpu", **OPTIONS).take_all()
    for row in rows:
        expected = tok.encode(np.stack(list(iter_frames(row["path"]))), **OPTIONS)
        assert row["status"] == "ok" and row["frames"] == expected.num_frames
        assert np.array_equal(np.asarray(row["tokens"]), np.concatenate([w.tokens for w in expected.windows]))
