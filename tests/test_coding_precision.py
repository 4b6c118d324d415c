"""Precision chosen from the hardware (infotok_cli.coding.precision), on this machine's real CPU and on CPU
descriptions of the two kinds users run on."""

from __future__ import annotations

import warnings

import pytest
import torch

from infotok_cli.coding import precision
from infotok_cli.coding.precision import Precision, PrecisionError, PrecisionWarning, choose_precision, cpu_info

AVX2_ONLY = "model name\t: AMD EPYC 7R13 Processor\nflags\t\t: fpu sse sse2 avx avx2 fma bmi2\n"
AMX = ("model name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: fpu avx avx2 fma avx512f avx512bw avx512_vnni "
       "avx512_bf16 amx_bf16 amx_tile\n")


@pytest.fixture
def cpu_kind(monkeypatch: pytest.MonkeyPatch):
    """Describe the CPU as /proc/cpuinfo would on another machine (only the text changes; parsing is real)."""

    def use(text: str) -> None:
        monkeypatch.setattr(precision, "_cpuinfo_text", lambda: text)

    monkeypatch.delenv("INFOTOK_PRECISION", raising=False)
    return use


def test_avx2_only_cpu_runs_float32(cpu_kind) -> None:
    cpu_kind(AVX2_ONLY)
    info = cpu_info()
    assert info.model == "AMD EPYC 7R13 Processor" and not info.bf16_native
    assert info.flags == ("avx2", "fma")
    choice = choose_precision("auto", "cpu")
    assert choice.name == "fp32" and choice.dtype == torch.float32 and "no native bf16" in choice.reason


def test_bf16_cpu_runs_bf16(cpu_kind) -> None:
    cpu_kind(AMX)
    assert cpu_info().bf16_native
    assert "amx_bf16" in cpu_info().flags and "avx512_bf16" in cpu_info().flags
    choice = choose_precision("auto", "cpu")
    assert choice.name == "bf16" and choice.warning is None


def test_emulated_bf16_warns_once_in_one_line(cpu_kind) -> None:
    cpu_kind(AVX2_ONLY)
    with pytest.warns(PrecisionWarning, match="emulated") as caught:
        choice = precision.resolve_precision("bf16", "cpu")
    assert choice.name == "bf16" and len(caught) == 1 and "\n" not in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.resolve_precision("fp32", "cpu").name == "fp32"


def test_unknown_or_impossible_precisions_are_refused(cpu_kind) -> None:
    cpu_kind(AMX)
    with pytest.raises(PrecisionError, match="unknown precision"):
        choose_precision("int8", "cpu")
    with pytest.raises(PrecisionError, match="CUDA"):
        choose_precision("fp16", "cpu")


def test_environment_variable_replaces_auto_only(cpu_kind, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu_kind(AMX)
    monkeypatch.setenv("INFOTOK_PRECISION", "fp32")
    assert choose_precision("auto", "cpu").name == "fp32"
    assert choose_precision("bf16", "cpu").name == "bf16"


def test_this_machine_agrees_with_onednn() -> None:
    """On the machine the tests run on, the flags and oneDNN's own check agree on native bf16."""
    if not precision._cpuinfo_text():
        pytest.skip("no /proc/cpuinfo")
    if cpu_info().bf16_native:
        assert precision._mkldnn_bf16_supported()


def test_autocast_is_off_in_float32() -> None:
    with Precision("fp32", "cpu", "asked for").autocast():
        assert not torch.is_autocast_enabled("cpu")
    with Precision("bf16", "cpu", "asked for").autocast():
        assert torch.is_autocast_enabled("cpu")
