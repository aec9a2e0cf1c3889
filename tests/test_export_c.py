# SPDX-License-Identifier: Apache-2.0
# C export: the generated C99 model, compiled with gcc, is bit-exact with the integer reference.
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_export_ir import SPACE, TwoInputs, TwoOutputs, random_frozen
from torch import nn

import zerobit as zb
from zerobit.export import (
    flash_bytes,
    format_manifest,
    pack_codes,
    prune,
    read_manifest,
    run_reference,
    to_ir,
)
from zerobit.export.c import ARM_FLAGS, RUNTIME_FILES, arm_size_report, codegen, export_c, load_c
from zerobit.quant import integer_avg_pool_divide, quantize_multiplier, requantize

GCC = shutil.which("gcc")
pytestmark = [
    pytest.mark.skipif(GCC is None, reason="gcc is not installed"),
    pytest.mark.usefixtures("one_thread"),
]
STRICT = ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-O2"]
SANITIZE = ["-fsanitize=undefined,address", "-fno-sanitize-recover=all", "-g"]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "export.md"
RUNTIME = Path(__file__).resolve().parents[1] / "zerobit" / "export" / "c" / "runtime"
# (model, seed): random architectures of the models of tests/test_export_ir.py
CASES = (
    [(m, s) for m in ("resnet8", "dscnn") for s in range(5)]
    + [(m, s) for m in ("concat", "pool2d", "pool1d", "flatten") for s in range(3)]
    + [("mobilenetv1", 0)]
)


def compile_c(sources: list[Path], target: Path, flags: list[str]) -> Path:
    assert GCC is not None
    command = [GCC, *flags, "-o", str(target), *map(str, sources), "-lm"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return target


@pytest.fixture(scope="module")
def runtime_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runtime compiled once, strictly, to an object file linked into every model."""
    folder = tmp_path_factory.mktemp("runtime")
    return compile_c([RUNTIME / "zerobit_rt.c"], folder / "zerobit_rt.o", [*STRICT, "-c"])


def run_c(
    folder: Path, x: torch.Tensor | tuple[torch.Tensor, ...], flags: list[str], runtime: Path | None
) -> np.ndarray:
    """Build ``folder``'s exported model and run it on ``x`` (one tensor per model input).

    Returns:
        float32 (N, total output values per sample), the outputs of a sample in order.
    """
    inputs = x if isinstance(x, tuple) else (x,)
    sources = [folder / "main.c", folder / "model.c", runtime or folder / "zerobit_rt.c"]
    binary = compile_c(sources, folder / "model", flags)
    samples = torch.cat([t.reshape(len(t), -1) for t in inputs], dim=1)
    samples.numpy().astype("<f4").tofile(folder / "in.bin")
    result = subprocess.run(
        [str(binary), str(folder / "in.bin"), str(folder / "out.bin")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return np.fromfile(folder / "out.bin", dtype="<f4").reshape(len(samples), -1)


def same_bits(c: np.ndarray, expected: torch.Tensor) -> bool:
    expected_bits = expected.detach().to(torch.float32).reshape(c.shape).numpy().view(np.uint32)
    return bool(np.array_equal(c.view(np.uint32), expected_bits))


@pytest.mark.parametrize(("name", "seed"), CASES)
def test_c_logits_bit_exact(name: str, seed: int, tmp_path: Path, runtime_object: Path) -> None:
    frozen, x = random_frozen(name, seed)
    graph = to_ir(frozen)
    exported = export_c(frozen, tmp_path)
    assert sorted(p.name for p in exported.files) == sorted(
        ["model.h", "model.c", "main.c", "Makefile", *RUNTIME_FILES]
    )
    logits = run_c(tmp_path, x, STRICT, runtime_object)
    reference = run_reference(graph, x)
    assert isinstance(reference, torch.Tensor)
    assert same_bits(logits, reference)
    with torch.no_grad():
        assert same_bits(logits, frozen(x))


class SignedPoolNet(nn.Module):
    """Signed codes into a padded max pool, and a quantized (not float) model output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.max_pool2d(self.conv(x), 2, padding=1), 1)


def test_c_quantized_output_and_signed_max_pool(tmp_path: Path, runtime_object: Path) -> None:
    frozen = zb.convert(SignedPoolNet(), torch.randn(4, 2, 6, 6), SPACE).eval().freeze().eval()
    graph = to_ir(frozen)
    assert graph.tensors[graph.outputs[0]].signed and not graph.tensors[graph.outputs[0]].is_float
    x = torch.randn(5, 2, 6, 6) * 2
    export_c(frozen, tmp_path)
    assert same_bits(run_c(tmp_path, x, STRICT, runtime_object), frozen(x).detach())


def test_c_two_inputs_and_two_outputs(tmp_path: Path, runtime_object: Path) -> None:
    """Inputs follow each other within a sample, as do outputs (a quantized one dequantized)."""
    x, y = torch.rand(4, 1, 6, 6), torch.randn(4, 2, 6, 6)
    frozen = zb.convert(TwoInputs(), (x, y), SPACE).eval().freeze().eval()
    inputs = (torch.rand(3, 1, 6, 6) * 2, torch.randn(3, 2, 6, 6) * 2)
    export_c(frozen, tmp_path / "inputs")
    assert same_bits(run_c(tmp_path / "inputs", inputs, STRICT, runtime_object), frozen(*inputs))
    space = zb.SearchSpace(weight_bits=(2, 4, 8), act_bits=(2, 4, 8))  # an output keeps channels
    frozen = zb.convert(TwoOutputs(), torch.rand(2, 1, 5, 5), space).eval().freeze().eval()
    x = torch.rand(3, 1, 5, 5) * 2
    export_c(frozen, tmp_path / "outputs")
    logits, features = frozen(x)
    expected = torch.cat([logits, features.flatten(1)], dim=1).detach()
    assert same_bits(run_c(tmp_path / "outputs", x, STRICT, runtime_object), expected)


def test_accumulator_overflow_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frozen, _ = random_frozen("flatten", 0)
    monkeypatch.setattr(codegen, "_ACC_LIMIT", 100)
    with pytest.raises(ValueError, match="overflows int32"):
        export_c(frozen, tmp_path)


def test_c_under_sanitizers(tmp_path: Path) -> None:
    """Undefined behaviour (signed overflow, negative shifts) and out-of-bounds reads abort."""
    (tmp_path / "probe.c").write_text("int main(void) { return 0; }\n")
    assert GCC is not None
    probe = [GCC, *SANITIZE, "-o", str(tmp_path / "probe"), str(tmp_path / "probe.c")]
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        pytest.skip("gcc cannot link sanitized programs here")
    for name in ("resnet8", "pool1d"):
        frozen, x = random_frozen(name, 1)
        folder = tmp_path / name
        export_c(frozen, folder)
        logits = run_c(folder, x * 4, [*STRICT, *SANITIZE], None)
        assert same_bits(logits, frozen(x * 4).detach())


def test_makefile_builds_and_arena_is_reused(tmp_path: Path) -> None:
    frozen, x = random_frozen("resnet8", 2)
    exported = export_c(frozen, tmp_path)
    graph = prune(frozen)
    quantized = [t for t in graph.tensors.values() if not t.is_float]
    assert exported.arena_bytes < sum(int(np.prod(t.shape)) for t in quantized)
    assert exported.weight_bytes == sum(
        len(pack_codes(op.weight_codes[op.weight_bits == b], int(b)))
        for op in graph.layers()
        for b in op.weight_bits.unique()
    )
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(
        ["make", "-C", str(tmp_path), f"CC={GCC}", f"CFLAGS={' '.join(STRICT)}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    x.numpy().astype("<f4").tofile(tmp_path / "in.bin")
    binary, data = tmp_path / "model", tmp_path / "in.bin"
    subprocess.run([str(binary), str(data), str(tmp_path / "o.bin")], check=True)
    logits = np.fromfile(tmp_path / "o.bin", dtype="<f4").reshape(len(x), -1)
    assert same_bits(logits, frozen(x).detach())


# A harness over the runtime's primitives: reads lines of integers, prints one result a line.
HARNESS = r"""
#include <stdio.h>
#include <inttypes.h>
#include "zerobit_rt.h"

int main(void)
{
    char what;
    long long a, b, c;
    while (scanf(" %c %lld %lld %lld", &what, &a, &b, &c) == 4) {
        if (what == 'r') {
            printf("%" PRId64 "\n", zb_requantize((int64_t)a, (int32_t)b, (int32_t)c));
        } else if (what == 'u') {  /* a: bits, b: first code, c: the run's bytes as hex */
            uint8_t data[8];
            int8_t code;
            int i;
            for (i = 0; i < 8; ++i) {
                data[i] = (uint8_t)((unsigned long long)c >> (8 * i));
            }
            zb_unpack(data, (int32_t)a, (int32_t)b, 1, &code);
            printf("%d\n", code);
        }
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory, runtime_object: Path) -> Path:
    folder = tmp_path_factory.mktemp("harness")
    (folder / "harness.c").write_text(HARNESS)
    flags = [*STRICT, f"-I{RUNTIME}"]
    return compile_c([folder / "harness.c", runtime_object], folder / "harness", flags)


def run_harness(harness: Path, lines: list[str]) -> list[int]:
    result = subprocess.run(
        [str(harness)], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True
    )
    return [int(v) for v in result.stdout.split()]


def test_requantize_matches_python(harness: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    acc = torch.randint(-(2**31), 2**31 + 1, (400,), generator=generator, dtype=torch.int64)
    acc[:6] = torch.tensor([2**31, -(2**31), 0, -1, 1, -5])
    multiplier = torch.randint(0, 2**31, (400,), generator=generator, dtype=torch.int64)
    multiplier[:3] = 2**31 - 1
    shift = torch.randint(0, 63, (400,), generator=generator, dtype=torch.int64)
    shift[::7] = 0
    shift[1::7] = 62
    lines = [f"r {a} {m} {n}" for a, m, n in zip(acc.tolist(), multiplier.tolist(), shift.tolist())]
    assert run_harness(harness, lines) == requantize(acc, multiplier, shift).tolist()
    # average pool division: the generated pool constants reproduce integer_avg_pool_divide
    totals = torch.arange(-700, 701)
    for count in (1, 2, 3, 4, 9, 25, 49):
        m, n = quantize_multiplier(1 / count)
        got = run_harness(harness, [f"r {t} {m} {n}" for t in totals.tolist()])
        assert got == integer_avg_pool_divide(totals, count).tolist()


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_unpack_matches_pack_codes(harness: Path, bits: int) -> None:
    limit = 2 ** (bits - 1)
    codes = torch.arange(-limit, limit).roll(3)[: 56 // bits]
    word = int.from_bytes(pack_codes(codes, bits).ljust(8, b"\0"), "little")
    got = run_harness(harness, [f"u {bits} {i} {word}" for i in range(len(codes))])
    assert got == codes.tolist()


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="no arm-none-eabi-gcc")
def test_arm_size_report(tmp_path: Path) -> None:
    frozen, _ = random_frozen("dscnn", 0)
    exported = export_c(frozen, tmp_path)
    model, runtime = arm_size_report(tmp_path, flags=(*ARM_FLAGS, "-Werror", "-pedantic"))
    graph = prune(frozen)
    channels = sum(op.out_channels for op in graph.layers())
    # flash holds at least the packed weights and, per channel, an int32 bias and a multiplier
    assert (model.file, runtime.file) == ("model.c", "zerobit_rt.c")
    assert model.text >= exported.weight_bytes + 4 * channels
    assert model.data == model.bss == runtime.data == runtime.bss == 0
    assert 0 < runtime.text < 4096
    assert model.flash == model.text


def test_documented_command_line(tmp_path: Path, runtime_object: Path) -> None:
    """The gcc command and run line of docs/export.md's C section build and run the model."""
    section = DOCS.read_text().split("## C (`zerobit/export/c/`)")[1]
    compile_line, run_line = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0].splitlines()
    frozen, x = random_frozen("concat", 0)
    export_c(frozen, tmp_path)
    x.numpy().astype("<f4").tofile(tmp_path / "inputs.bin")
    assert GCC is not None
    for line in ([GCC, *compile_line.split()[1:]], run_line.split()):
        subprocess.run(line, cwd=tmp_path, check=True, capture_output=True)
    logits = np.fromfile(tmp_path / "logits.bin", dtype="<f4").reshape(len(x), -1)
    assert same_bits(logits, frozen(x).detach())


def test_arena_of_a_chain_is_its_largest_layer_input_plus_output(tmp_path: Path) -> None:
    """DS-CNN is a chain with in-place ReLUs: the arena reaches the lower bound exactly."""
    frozen, _ = random_frozen("dscnn", 0)
    graph = prune(frozen)
    bound = max(
        int(np.prod(graph.tensors[op.inputs[0]].shape))
        + int(np.prod(graph.tensors[op.output].shape))
        for op in graph.layers()
        if not op.float_output
    )
    assert export_c(graph, tmp_path).arena_bytes == bound


def test_export_builds_checks_and_sizes_the_c_model(tmp_path: Path) -> None:
    frozen, x = random_frozen("dscnn", 1)
    path = zb.export(frozen, x, "c", tmp_path / "c")  # checked through a host build
    logits = zb.load_artifact(path)(x)
    assert isinstance(logits, torch.Tensor) and same_bits(logits.numpy(), frozen(x).detach())
    manifest = read_manifest(tmp_path / "c")
    arena = export_c(frozen, tmp_path / "again").arena_bytes
    assert manifest["costs"] == {
        "size_bits": zb.cost.evaluate(frozen, "size"),
        "flash_bytes": flash_bytes(frozen),
        "ram_bytes": arena,
    }
    assert manifest["c"]["arena_bytes"] == arena
    if shutil.which("arm-none-eabi-gcc") is None:
        assert manifest["cortex_m4"] is None
        return
    objects = arm_size_report(tmp_path / "c")
    arm = manifest["cortex_m4"]
    assert arm["objects"] == [dataclasses.asdict(o) for o in objects]
    assert arm["text"] == sum(o.text for o in objects) == arm["flash_bytes"]
    assert arm["ram_bytes"] == arena + manifest["c"]["scratch_bytes"]
    assert f"text {arm['text']} B, data 0 B, bss 0 B" in format_manifest(manifest)


def test_load_c_splits_several_outputs(tmp_path: Path) -> None:
    space = zb.SearchSpace(weight_bits=(2, 4, 8), act_bits=(2, 4, 8))
    frozen = zb.convert(TwoOutputs(), torch.rand(2, 1, 5, 5), space).eval().freeze().eval()
    export_c(frozen, tmp_path)
    x = torch.rand(3, 1, 5, 5) * 2
    logits, features = load_c(tmp_path)(x)
    expected_logits, expected_features = frozen(x)
    assert torch.equal(logits, expected_logits)
    assert torch.equal(features, expected_features.flatten(1))
    with pytest.raises(ValueError, match="input sizes"):
        load_c(tmp_path / "model.c")(torch.rand(3, 1, 4, 4))
    (tmp_path / "main.c").unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        load_c(tmp_path)
