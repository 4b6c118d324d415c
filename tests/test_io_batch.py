"""Batch planning (io/batch.py): lists, shards, output names, skip-existing and outcomes, as the command line
and the Ray Data integration use them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from infotok_cli.io.batch import (
    BatchItem,
    gather,
    output_path,
    parse_shard,
    plan,
    read_list,
    run,
    select_shard,
    unique,
)


def test_shards_partition_the_inputs() -> None:
    items = [f"clip{i}.mp4" for i in range(11)]
    for n in range(1, 6):
        shards = [select_shard(items, (k, n)) for k in range(n)]
        assert sorted(x for s in shards for x in s) == sorted(items)  # every input, exactly once
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
        assert shards == [select_shard(items, parse_shard(f"{k}/{n}")) for k in range(n)]
    for bad in ("3/3", "-1/2", "1/0", "1", "a/b", "1/2/3"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_lists_plans_and_outcomes(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("# clips\n a.mp4 \n\nsub/b.mp4\n# done\n")
    assert read_list(listing) == ["a.mp4", "sub/b.mp4"]
    assert read_list("-", io.StringIO("x.mp4\n\ny.mp4\n")) == ["x.mp4", "y.mp4"]
    assert unique([Path("a.mp4"), Path("./a.mp4"), Path("b.mp4")]) == [Path("a.mp4"), Path("b.mp4")]
    with pytest.raises(ValueError, match="would both write"):
        plan([Path("x/a.mp4"), Path("y/a.mkv")], tmp_path, ".itok")
    items = plan([Path("a.mp4"), Path("b.mp4"), Path("c.mp4")], tmp_path, ".itok")
    (tmp_path / "c.itok").write_bytes(b"done")

    def work(item: BatchItem) -> dict:
        if item.input.name == "b.mp4":
            raise ValueError("broken")
        return {"name": item.input.name}

    outcomes = list(run(items, work, skip_existing=True))
    assert [o.status for o in outcomes] == ["ok", "failed", "skipped"]
    assert outcomes[0].result == {"name": "a.mp4"} and str(outcomes[1].error) == "broken"


def test_gather_is_the_command_lines_input_rule(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("b.mp4\n./a.mp4\nc.mp4\n# d.mp4\ne.mp4\n")
    everything = gather(["a.mp4", Path("b.mp4")], listing)
    assert everything == [Path("a.mp4"), Path("b.mp4"), Path("c.mp4"), Path("e.mp4")]  # arguments first, no repeats
    shards = [gather(["a.mp4", "b.mp4"], listing, f"{k}/3") for k in range(3)]
    assert shards == [select_shard(everything, (k, 3)) for k in range(3)]
    assert gather(["a.mp4", "b.mp4"], listing, (1, 3)) == shards[1]
    assert gather(["x.mp4"], "-", stdin=io.StringIO("y.mp4\nx.mp4\n")) == [Path("x.mp4"), Path("y.mp4")]
    with pytest.raises(ValueError, match="--shard"):
        gather(["a.mp4"], shard="2/2")


def test_output_names_and_skip_existing(tmp_path: Path) -> None:
    assert output_path("clips/take.1.mp4", tmp_path, ".itok") == tmp_path / "take.1.itok"
    assert [i.output for i in plan([Path("a.mp4")], None, ".itok")] == [None]
    items = plan([Path("a.mp4"), Path("b.mp4")], tmp_path, ".mp4")
    items[0].output.write_bytes(b"done")
    calls: list[Path] = []
    outcomes = list(run(items, lambda item: calls.append(item.input) or {}, skip_existing=True))
    assert [o.status for o in outcomes] == ["skipped", "ok"] and calls == [Path("b.mp4")]
    assert [o.status for o in run(items, lambda item: {})] == ["ok", "ok"]  # without skip_existing: every item
