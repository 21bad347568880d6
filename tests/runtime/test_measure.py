"""runtime.measure.machine: results name the CPU's SIMD level (int8/bf16 speed depends on it)."""

from __future__ import annotations

from runtime import measure


def test_simd_level_names_the_extensions() -> None:
    flags = {"sse4_2", "avx2", "avx512f", "avx512_vnni", "avx512_bf16"}
    assert measure.simd_level(flags) == "AVX2 AVX-512 VNNI BF16"
    assert measure.simd_level({"avx2", "avx_vnni"}) == "AVX2 AVX-VNNI"
    assert measure.simd_level({"sse4_2"}) == "no AVX2"


def test_machine_reports_model_cores_and_simd(monkeypatch) -> None:
    monkeypatch.setattr(measure, "_cpuinfo", lambda: ("Test CPU 9000", {"avx2", "fma"}))
    text = measure.machine()
    assert text.startswith("Test CPU 9000, ") and " cores, AVX2, " in text
    monkeypatch.setattr(measure, "_cpuinfo", lambda: (None, set()))
    assert "AVX" not in measure.machine()  # no flags known: nothing claimed
