"""The benchmark harness runs end to end on CPU (tiny preset) and reports sane, complete records.

No timing thresholds: these machines are shared, so only signs and structure are checked.
One `main` run (module fixture) covers the training step, the PyTorch peer, STS and encode.
"""

from __future__ import annotations

import json
import math

import jax
import pytest

from distilface_jax.benchmark import harness, hlo_anatomy
from distilface_jax.models.sentence_model import init_params
from distilface_jax.training import tiny_data

BATCH = 8  # conftest simulates 8 CPU devices: the global batch must split over them


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("benchmark")
    tiny_data.write_tiny_sts(str(folder / "sts"))
    output = folder / "results.jsonl"
    records = harness.main(
        [
            "--preset",
            "tiny",
            "--batch-sizes",
            str(BATCH),
            "--seq-len",
            "16",
            "--dtype",
            "float32",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--peer",
            "torch",
            "--encode",
            "64",
            "--eval-batch-size",
            "32",
            "--sts-dir",
            str(folder / "sts"),
            "--output",
            str(output),
        ]
    )
    return records, output


def by_kind(records, kind):
    found = [r for r in records if r["kind"] == kind]
    assert found, f"no {kind!r} record in {[r['kind'] for r in records]}"
    return found


def test_output_file_holds_the_printed_lines(run):
    records, output = run
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert (
        [r["kind"] for r in lines]
        == [r["kind"] for r in records]
        == ["train_step", "peer_train_step", "sts_suite", "encode"]
    )


def test_every_record_names_its_machine_and_workload(run):
    for record in run[0]:
        assert record["preset"] == "tiny" and record["seq_len"] == 16 and record["dtype"] == "float32"
        assert record["platform"] == "cpu" and record["num_devices"] == jax.device_count()
        assert record["peak_tflops_per_device"] > 0 and record["peak_dtype"] == "float32"
        assert {"jax", "jaxlib", "flax", "torch"} <= set(record["versions"])
        assert all(record["versions"][name] for name in ("jax", "jaxlib", "flax"))


def test_train_step_record(run):
    (step,) = by_kind(run[0], "train_step")
    assert step["batch"] == BATCH and step["steps"] == 2
    for key in (
        "step_ms",
        "step_ms_blocking",
        "sentences_per_s",
        "tokens_per_s",
        "compile_s",
        "first_step_s",
        "model_tflops_per_step",
        "peak_memory_bytes",
    ):
        assert step[key] > 0, key
    assert 0 < step["mfu"] < 1 and 0 < step["mfu_blocking"] < 1
    assert math.isclose(step["sentences_per_s"], BATCH / (step["step_ms"] / 1e3), rel_tol=1e-6)
    assert math.isfinite(step["first_loss"])
    assert step["peak_memory_source"] in ("device.memory_stats", "compiled.memory_analysis", "getrusage.ru_maxrss")
    # The data-parallel anatomy: candidates all-gathered, their cotangents reduce-scattered,
    # gradients all-reduced; no host round trip inside the step.
    collectives = step["hlo"]["collectives"]
    assert collectives["all-gather"]["bytes"] == BATCH * 1 * 32 * 4  # B × (V−1) × H float32
    assert {"all-reduce", "reduce-scatter"} <= set(collectives)
    assert step["hlo"]["host_callbacks"] == 0
    assert step["hlo"]["converts"]["f32_to_bf16"] == 0  # a float32 run casts nothing to bf16


def test_peer_record(run):
    (step,) = by_kind(run[0], "train_step")
    (peer,) = by_kind(run[0], "peer_train_step")
    assert peer["peer"] == "torch-hf-distilbert" and peer["compile"] is False
    assert peer["batch"] == BATCH and peer["seq_len"] == 16 and peer["device"] == "cpu"
    assert peer["step_ms"] > 0 and peer["sentences_per_s"] > 0 and math.isfinite(peer["loss"])
    assert math.isclose(peer["speedup_vs_peer"], peer["step_ms"] / step["step_ms"])


def test_sts_and_encode_records(run):
    (sts,) = by_kind(run[0], "sts_suite")
    assert len(sts["tasks"]) == 7 and sts["sentences"] > 0
    assert sts["seconds"] > 0 and sts["compile_s"] >= 0 and sts["sentences_per_s"] > 0
    assert math.isfinite(sts["avg_spearman"])
    (encode,) = by_kind(run[0], "encode")
    assert encode["sentences"] == 64 and encode["sentences_per_s"] > 0 and encode["finite"]
    assert encode["max_tokens"] > encode["mean_tokens"] > 0  # mixed lengths


def test_flops_formula_on_distilbert_base():
    """6·N·T with DistilBERT-base's known sizes: 42.5M layer parameters (DESIGN.md's '43M')."""
    config = harness.PRESETS["distilbert-base"]
    shapes = jax.eval_shape(lambda key: init_params(config, key), jax.random.PRNGKey(0))
    counts = harness.parameter_counts(shapes)
    hidden, ffn = 768, 3072
    per_layer = 4 * (hidden * hidden + hidden) + (hidden * ffn + ffn) + (ffn * hidden + hidden) + 4 * hidden
    assert counts == {
        "layers": 6 * per_layer,
        "head": hidden * hidden + hidden,
        "embedding": (30522 + 512) * hidden + 2 * hidden,
    }
    batch, length = 64, 32
    rows = 2 * batch
    expected = 6 * 6 * per_layer * rows * length + 6 * counts["head"] * rows + 12 * 6 * rows * length**2 * hidden
    assert harness.model_flops_per_step(config, counts, batch, length) == expected


def test_hlo_stats_reads_collectives_and_converts():
    text = "\n".join(
        [
            "ENTRY %main (p: f32[4,8]) -> bf16[4,8] {",
            "  %p = f32[4,8]{1,0} parameter(0)",
            "  %ag = f32[16,8]{1,0} all-gather(%p), dimensions={0}",
            "  %ar = (f32[4,8]{1,0}, f32[]) all-reduce(%p, %c), to_apply=%add",
            "  ROOT %c = bf16[4,8]{1,0} convert(%p)",
            "}",
        ]
    )
    stats = hlo_anatomy.hlo_stats(text)
    assert stats["collectives"] == {"all-gather": {"count": 1, "bytes": 512}, "all-reduce": {"count": 1, "bytes": 132}}
    assert stats["converts"] == {"f32_to_bf16": 1, "bf16_to_f32": 0, "standalone": 1}
    assert stats["host_callbacks"] == 0


def test_optimizer_is_the_base_recipe():
    from distilface_jax.config.base import base_config

    config = base_config()
    for field, value in vars(harness._OPTIMIZER).items():
        if field != "total_steps":
            assert config[field] == value, field
