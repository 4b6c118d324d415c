"""Weights and configurations as untrusted input: generated hostile configurations (infotok, InfoTok-Flex,
router head) and hostile stored metadata and headers are refused with one line (ValueError from a config,
WeightsError from a file, exit code 6 from the CLI) before anything large is allocated, or load a model
within the bounds. 440 generated cases here; `make fuzz-weights` (tests/fuzz_weights.py) runs the same generators
for 2,000 and measures time and memory."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from infotok_cli.errors import WeightsError
from infotok_cli.model.bounds import MAX_PARAMETERS
from infotok_cli.model.config import ModelConfig
from infotok_cli.model.flex import FlexConfig, FlexTokenizer
from infotok_cli.model.flex_store import RELEASE_CONFIG, import_checkpoint
from infotok_cli.model.infotok import InfoTok
from infotok_cli.model.router_head import HeadConfig, RouterHead
from infotok_cli.model.store import load_model, save_weights
from infotok_cli.model.weights_header import skeleton

FIXTURE = Path(__file__).resolve().parent / "data" / "infotok-flex"
SMALL_FLEX = json.loads((FIXTURE / "small-config.json").read_text())
TINY = {"name": "tiny", "channels_quarter": 8, "channels_eighth": 16, "latent_dim": 16, "width": 16, "heads": 2,
        "compressor_layers": 1, "decompressor_layers": 1}
HEAD = json.loads(HeadConfig(in_channels=27, width=8, dilations=(1, 2), curve_rates=(0.25, 0.5)).to_json())


def cases(count: int) -> settings:
    """Hypothesis settings for `count` generated cases, the same ones every run (no example database)."""
    return settings(max_examples=count, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


# Values a hostile file might put anywhere: the issue's cases (20,000 channels, 100,000 layers, zero heads,
# a stride of 2, NaN, 2^63) and every JSON type.
HOSTILE = st.one_of(
    st.sampled_from([0, 1, 2, 3, -1, 20_000, 100_000, 2**31, 2**63, 2**64 + 1, 10**30, True, False, None, "", "8",
                     float("nan"), float("inf"), -0.0, 1e308, 2.5, [], {}, [0], [2**63], [[8]]]),
    st.integers(), st.floats(), st.text(max_size=4),
    st.lists(st.integers(min_value=-3, max_value=5000), max_size=20),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def mutated(base: dict, nested: str | None = None) -> st.SearchStrategy[dict]:
    """`base` with one to three fields (of it or of its `nested` dict) replaced by hostile values or dropped."""
    keys = [(None, k) for k in base] + ([(nested, k) for k in base[nested]] if nested else [])

    @st.composite
    def build(draw: st.DrawFn) -> dict:
        out = json.loads(json.dumps(base))
        for where, key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True)):
            target = out if where is None else out.get(where)
            if not isinstance(target, dict):
                continue
            if draw(st.integers(0, 9)) == 0:
                target.pop(key, None)
            else:
                target[key] = draw(HOSTILE)
        return out

    return build()


def assert_refused_or_bounded(make_config, build_model, config: object) -> None:
    """A config is refused with ValueError, or its model (on the meta device) stays under the bound."""
    try:
        cfg = make_config(config)
    except ValueError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
        return
    try:
        skeleton(lambda: build_model(cfg), Path("config"))
    except WeightsError as exc:  # over MAX_PARAMETERS although each field is in range
        assert "parameters" in str(exc)


@cases(150)
@given(config=mutated(TINY))
def test_hostile_infotok_configs(config: dict) -> None:
    assert_refused_or_bounded(ModelConfig.from_dict, InfoTok, config)


@cases(150)
@given(config=st.one_of(mutated(SMALL_FLEX, "vit_config"), mutated(RELEASE_CONFIG, "vit_config")))
def test_hostile_flex_configs(config: dict) -> None:
    assert_refused_or_bounded(FlexConfig.from_release, FlexTokenizer, config)


@cases(80)
@given(config=mutated(HEAD))
def test_hostile_router_head_configs(config: dict) -> None:
    assert_refused_or_bounded(lambda c: HeadConfig.from_json(json.dumps(c)), RouterHead, config)


def test_the_issues_configs_are_refused_by_name() -> None:
    cases = {"channels": ("channels", 20_000), "num_encoder_layers": ("vit_config", 100_000),
             "num_attention_heads": ("vit_config", 0), "spatial_compression": ("spatial_compression", 2),
             "theta": ("vit_config", float("nan")), "z_channels": ("z_channels", 2**63)}
    for key, (where, value) in cases.items():
        config = json.loads(json.dumps(RELEASE_CONFIG))
        (config if where == key else config[where])[key] = value
        with pytest.raises(ValueError, match=key):
            FlexConfig.from_release(config)
    for key, value in (("width", 20_000), ("compressor_layers", 100_000), ("heads", 0), ("heads", 3),
                       ("latent_dim", True), ("levels", [1, 8]), ("levels", [64, 64, 64])):
        with pytest.raises(ValueError, match=key if key != "heads" or value == 0 else "multiple"):
            ModelConfig.from_dict({**TINY, key: value})
    with pytest.raises(ValueError, match="parameters"):  # each field in range, together 20 G parameters
        ModelConfig.from_dict({**TINY, "width": 4096, "compressor_layers": 64, "decompressor_layers": 64})


# ---------------------------------------------------------------------------- stored files


@pytest.fixture(scope="module")
def infotok_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("untrusted") / "tiny.safetensors"
    save_weights(path, InfoTok(ModelConfig.from_dict(TINY)), e_ref=0.1)
    return path


@pytest.fixture(scope="module")
def flex_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("flex-home")
    os.environ["INFOTOK_HOME"], before = str(home), os.environ.get("INFOTOK_HOME")
    try:
        src = home / "small.safetensors"
        save_file(load_file(FIXTURE / "small-weights.safetensors"), src)
        return Path(import_checkpoint(src, "flex-small", config=FIXTURE / "small-config.json")["path"])
    finally:
        os.environ.pop("INFOTOK_HOME") if before is None else os.environ.__setitem__("INFOTOK_HOME", before)


def rewrite(src: Path, dst: Path, metadata: dict[str, str]) -> Path:
    save_file(load_file(src), dst, metadata=metadata)
    return dst


def hostile_metadata(draw: st.DrawFn, path: Path, config_base: dict, nested: str | None) -> dict[str, str]:
    from infotok_cli.model.store import read_metadata

    meta = read_metadata(path)
    meta["config"] = json.dumps(draw(mutated(config_base, nested)))
    for key in draw(st.lists(st.sampled_from(["e_ref", "e_ref_probe", "training", "dtype", "format",
                                              "tokens_sha256", "calibration"]), max_size=2, unique=True)):
        meta[key] = draw(st.one_of(st.sampled_from(["nan", "-1", "inf", "1e999", "[[[[", "{}", "0", "float16",
                                                    "0" * 64, "[" * 5000]), st.text(max_size=6)))
    return meta


@cases(60)
@given(data=st.data())
def test_hostile_stored_metadata(infotok_file: Path, flex_file: Path, tmp_path_factory: pytest.TempPathFactory,
                                 data: st.DataObject) -> None:
    flex = data.draw(st.booleans())
    src, base, nested = (flex_file, SMALL_FLEX, "vit_config") if flex else (infotok_file, TINY, None)
    meta = data.draw(st.composite(lambda draw: hostile_metadata(draw, src, base, nested))())
    path = rewrite(src, tmp_path_factory.mktemp("case") / "case.safetensors", meta)
    try:
        loaded = load_model(path)
    except WeightsError as exc:
        assert "\n" not in str(exc)
        return
    assert sum(p.numel() for p in loaded.model.parameters()) <= MAX_PARAMETERS


def test_hostile_headers(infotok_file: Path, tmp_path: Path) -> None:
    """Byte-level damage to the header: a huge declared length, changed shapes, dtypes and offsets."""
    raw = infotok_file.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    name = next(k for k in header if k != "__metadata__")
    cases = {"huge length": struct.pack("<Q", 2**63) + raw[8:], "short": raw[:5], "empty": b""}
    for label, change in (("shape", {"shape": [10**6, 10**6]}), ("dtype", {"dtype": "F16"}),
                          ("unknown dtype", {"dtype": "X9"}), ("offsets", {"data_offsets": [0, 2**62]})):
        bad = dict(header, **{name: {**header[name], **change}})
        text = json.dumps(bad).encode()
        cases[label] = struct.pack("<Q", len(text)) + text + raw[8 + length:]
    bad_meta = dict(header, __metadata__={**header["__metadata__"], "config": json.dumps({**TINY, "width": 32})})
    text = json.dumps(bad_meta).encode()
    cases["config and tensors differ"] = struct.pack("<Q", len(text)) + text + raw[8 + length:]
    for label, content in cases.items():
        path = tmp_path / f"{label}.safetensors"
        path.write_bytes(content)
        with pytest.raises(WeightsError) as info:
            load_model(path)
        assert "\n" not in str(info.value), label


def test_cli_refuses_hostile_weights_with_exit_6_quickly(infotok_file: Path, moving_video: Path,
                                                        tmp_path: Path) -> None:
    """`compress --model FILE` with a config asking for 20,000 channels and `models import --config` with
    100,000 layers: one line, exit code 6, in seconds (the process start included)."""
    from infotok_cli.model.store import read_metadata

    meta = read_metadata(infotok_file)
    meta["config"] = json.dumps({**TINY, "channels_quarter": 20_000})
    hostile = rewrite(infotok_file, tmp_path / "hostile.safetensors", meta)
    config = tmp_path / "layers.json"
    config.write_text(json.dumps({**RELEASE_CONFIG, "vit_config": {**RELEASE_CONFIG["vit_config"],
                                                                   "num_encoder_layers": 100_000}}))
    env = {**os.environ, "INFOTOK_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    env.pop("INFOTOK_DEBUG", None)
    for args in (["compress", moving_video, tmp_path / "o.itok", "--model", hostile],
                 ["models", "import", hostile, "--name", "x", "--config", config]):
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "infotok_cli", *map(str, args)], capture_output=True,
                              text=True, env=env, timeout=120)
        assert proc.returncode == 6 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "internal error" not in proc.stderr and time.monotonic() - start < 60
