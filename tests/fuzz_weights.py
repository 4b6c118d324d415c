"""Hostile configurations and weights files, generated and timed (not part of `make test`).

Runs the generators of tests/test_model_untrusted.py for `--cases` cases in one process: configurations of
the three families (from_dict / from_release / from_json, then a meta-device build of what passes) and
weights files with hostile stored metadata (written to a temporary folder, then `load_model`). Counts
internal errors (any exception but ValueError / WeightsError), cases slower than `--hang` seconds, and the
process's peak resident memory; exits 1 if any internal error or hang occurred or memory passed `--max-rss-mb`.

Usage: python tests/fuzz_weights.py [--cases 2000] [--hang 10] [--max-rss-mb 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("INFOTOK_HOME", tempfile.mkdtemp(prefix="fuzz-weights-"))

import test_model_untrusted as gen  # noqa: E402  (the generators; this folder is on sys.path when run as a script)

from infotok_cli.errors import WeightsError  # noqa: E402
from infotok_cli.model.config import ModelConfig  # noqa: E402
from infotok_cli.model.flex import FlexConfig, FlexTokenizer  # noqa: E402
from infotok_cli.model.infotok import InfoTok  # noqa: E402
from infotok_cli.model.router_head import HeadConfig, RouterHead  # noqa: E402
from infotok_cli.model.store import load_model, read_metadata, save_weights  # noqa: E402
from infotok_cli.model.weights_header import skeleton  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--hang", type=float, default=10.0)
    parser.add_argument("--max-rss-mb", type=float, default=1024.0)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="fuzz-weights-"))
    tiny = folder / "tiny.safetensors"
    save_weights(tiny, InfoTok(ModelConfig.from_dict(gen.TINY)), e_ref=0.1)
    src = folder / "small.safetensors"
    gen.save_file(gen.load_file(gen.FIXTURE / "small-weights.safetensors"), src)
    flex = Path(gen.import_checkpoint(src, "flex-small", config=gen.FIXTURE / "small-config.json")["path"])
    families = {
        "infotok config": (gen.mutated(gen.TINY), ModelConfig.from_dict, InfoTok),
        "flex config": (st.one_of(gen.mutated(gen.SMALL_FLEX, "vit_config"),  # small and release-sized
                                  gen.mutated(gen.RELEASE_CONFIG, "vit_config")),
                        FlexConfig.from_release, FlexTokenizer),
        "head config": (gen.mutated(gen.HEAD), lambda c: HeadConfig.from_json(json.dumps(c)), RouterHead),
    }
    start_rss = peak_rss_mb()
    counts = {"refused": 0, "accepted": 0, "internal": 0, "hangs": 0}
    slowest = [0.0]
    kinds = ["infotok config", "flex config", "head config", "infotok file", "flex file"]

    @settings(max_examples=args.cases, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(data=st.data())
    def run_case(data: st.DataObject) -> None:
        i = sum(counts.values()) - counts["hangs"]
        kind = data.draw(st.sampled_from(kinds))
        t0 = time.monotonic()
        try:
            if kind.endswith("config"):
                strategy, make, build = families[kind]
                cfg = make(data.draw(strategy))
                skeleton(lambda: build(cfg), Path("config"))
            else:
                path = tiny if kind == "infotok file" else flex
                base, nested = (gen.TINY, None) if kind == "infotok file" else (gen.SMALL_FLEX, "vit_config")
                meta = read_metadata(path)
                meta["config"] = json.dumps(data.draw(gen.mutated(base, nested)))
                load_model(gen.rewrite(path, folder / "case.safetensors", meta))
            counts["accepted"] += 1
        except (ValueError, WeightsError):
            counts["refused"] += 1
        except Exception as exc:  # noqa: BLE001  (what the fuzzer looks for)
            counts["internal"] += 1
            print(f"case {i} ({kind}): internal error {type(exc).__name__}: {exc}"[:300], file=sys.stderr)
        elapsed = time.monotonic() - t0
        slowest[0] = max(slowest[0], elapsed)
        counts["hangs"] += elapsed > args.hang

    run_case()
    rss = peak_rss_mb()
    cases = counts["refused"] + counts["accepted"] + counts["internal"]
    print(json.dumps({"cases": cases, **counts, "slowest_case_s": round(slowest[0], 3),
                      "peak_rss_mb": round(rss, 1), "rss_before_cases_mb": round(start_rss, 1)}))
    return int(counts["internal"] > 0 or counts["hangs"] > 0 or rss > args.max_rss_mb)


if __name__ == "__main__":
    sys.exit(main())
