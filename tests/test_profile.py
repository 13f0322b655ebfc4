"""``--profile``'s attribution (``bench/profile.py``) on a real shared library built here with gcc: guest
block addresses -> mapping -> file offset -> ELF address -> function -> kernel family. (The emulated boards'
end-to-end profile is in ``test_bench_emulate.py``.)"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from edgeformer_deploy.bench import profile

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None or profile.tools_available() is not None,
                                reason="needs gcc and binutils")

SOURCE = """
void xnn_qs8_gemm_minmax_ukernel_test(int *a) { for (int i = 0; i < 64; i++) a[i] = a[i] * 3 + 1; }
void tflite_ops_builtin_other(int *a) { for (int i = 0; i < 64; i++) a[i] += 7; }
"""
BASE = 0x40000000  # where the "guest" mapped the library's executable segment


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("elf")
    (folder / "k.c").write_text(SOURCE)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(folder / "libk.so"), str(folder / "k.c")], check=True)
    symbols = {}
    for line in subprocess.run(["nm", "-S", "--defined-only", str(folder / "libk.so")], capture_output=True,
                               text=True, check=True).stdout.splitlines():
        fields = line.split()
        if len(fields) == 4:
            symbols[fields[3]] = (int(fields[0], 16), int(fields[1], 16))
    text = next(line.split() for line in subprocess.run(["readelf", "-lW", str(folder / "libk.so")],
                                                        capture_output=True, text=True).stdout.splitlines()
                if re.match(r"\s*LOAD\s.*R E", line))
    return folder / "libk.so", symbols, int(text[1], 16), int(text[2], 16)


def guest_address(library, name: str, into: int = 4) -> int:
    _, symbols, offset, vaddr = library
    return BASE + (symbols[name][0] - vaddr) + into  # the segment's file offset is mapped at BASE


def test_blocks_are_attributed_to_functions_and_families(library, tmp_path):
    path, symbols, offset, _ = library
    maps = tmp_path / "maps"
    maps.write_text(f"{BASE:08x}-{BASE + 0x1000:08x} r-xp {offset:08x} 00:00 1 {path}\n"
                    "50000000-50001000 rw-p 00000000 00:00 0 \n")
    gemm, other = guest_address(library, "xnn_qs8_gemm_minmax_ukernel_test"), guest_address(
        library, "tflite_ops_builtin_other")
    blocks = tmp_path / "blocks"
    # two timed regions; a block retranslated at one address appears twice and is summed
    blocks.write_text(f"region 1\n{gemm:x} 10 30\n{other:x} 5 8\n50000010 4 1\n"
                      f"region 2\n{gemm:x} 10 20\n{gemm:x} 10 10\n{other:x} 5 8\n50000010 4 1\n# blocks 4\n")
    regions = profile.read_profile(blocks)
    assert [sum(r.values()) for r in regions] == [344, 344]
    summary = profile.summarize_profile(regions, profile.Symbolizer(profile.read_maps(maps)))
    assert summary["instructions_per_inference"] == 344 and summary["regions"] == 2
    top = {row["symbol"]: row for row in summary["top"]}
    assert top["xnn_qs8_gemm_minmax_ukernel_test"]["instructions"] == 300
    assert top["xnn_qs8_gemm_minmax_ukernel_test"]["family"] == "XNNPACK int8"
    assert top["xnn_qs8_gemm_minmax_ukernel_test"]["library"] == "libk.so"
    assert top["tflite_ops_builtin_other"]["instructions"] == 40
    assert top["(JIT or unmapped)"]["library"] == "[anonymous]"
    assert summary["top"][0]["share"] == pytest.approx(300 / 344)


def test_code_outside_any_symbol_keeps_its_library(library, tmp_path):
    path, symbols, offset, vaddr = library
    maps = tmp_path / "maps"
    maps.write_text(f"{BASE:08x}-{BASE + 0x1000:08x} r-xp {offset:08x} 00:00 1 {path}\n")
    end = max(sum(symbols[name]) for name in ("xnn_qs8_gemm_minmax_ukernel_test", "tflite_ops_builtin_other"))
    located = profile.Symbolizer(profile.read_maps(maps)).locate(BASE + (end - vaddr) + 0x40)
    assert located[0] == "libk.so" and located[1].startswith("+0x")


@pytest.mark.parametrize("symbol, family", [
    ("xnn_qs8_qc8w_gemm_minmax_fp32_ukernel_4x16c4__asm_aarch64_neondot_ld128", "XNNPACK int8"),
    ("xnn_f32_gemm_minmax_ukernel_6x8__aarch64_neonfma_ld128", "XNNPACK fp32"),
    ("xnn_f16_igemm_minmax_ukernel_6x16__aarch64_neonfp16arith_ld128", "XNNPACK fp16"),
    ("gemmlowp::NEON_32bit_GEMM_Int8Operands_LhsNonzero::Run(int*, unsigned int)", "gemmlowp"),
    ("void tflite::optimized_integer_ops::depthwise_conv::QuantizedDepthwiseConvAccumRow<true, 0, 1>(int)",
     "TFLite optimized int8 kernels"),
    ("TfLiteStatus tflite::ops::builtin::pad::EvalInt<signed char>(TfLiteContext*)", "TFLite builtin pad"),
    ("TfLiteStatus tflite::ops::builtin::dequantize::Eval<(tflite::ops::builtin::dequantize::KernelType)1>()",
     "quantize / dequantize"),
    ("Eigen::internal::gebp_kernel<float, float, int>::operator()(float*)", "Eigen"),
])
def test_kernel_families(symbol, family):
    assert profile.family_of(symbol, "lib.so") == family
