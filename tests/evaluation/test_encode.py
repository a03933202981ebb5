"""`python -m distilface_jax.encode` and the bucketed embedder behind it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from distilface_jax import encode
from distilface_jax.evaluation.inference import make_embed_fn
from distilface_jax.evaluation.inference_batches import bucket_lengths
from distilface_jax.interop import hf
from distilface_jax.models.sentence_pipeline import SentencePipeline

from helpers import SENTENCES, WORDS


def torch_mean_pooled(model_dir, sentences):
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = transformers.AutoModel.from_pretrained(str(model_dir)).eval()
    rows = []
    for sentence in sentences:  # One at a time: no padding at all in the reference.
        batch = tokenizer([sentence], return_tensors="pt", truncation=True, max_length=64)
        with torch.no_grad():
            rows.append(model(**batch).last_hidden_state[0].mean(0).numpy())
    return np.stack(rows)


def test_cli_rows_follow_lines_and_match_pytorch(tiny_distilbert_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, size=rng.integers(1, 50))) for _ in range(70)] + SENTENCES
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    status = encode.main(
        [
            "--model",
            str(tiny_distilbert_dir),
            "--input",
            str(tmp_path / "in.txt"),
            "--output",
            str(tmp_path / "out.npy"),
            "--batch-size",
            "16",
        ]
    )
    assert status == 0
    embeddings = np.load(tmp_path / "out.npy")
    assert embeddings.shape == (len(lines), 32) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, torch_mean_pooled(tiny_distilbert_dir, lines), atol=1e-5, rtol=0)


def test_line_splitting_keeps_rows_aligned(tmp_path):
    (tmp_path / "in.txt").write_bytes("first\r\nsec\u2028ond\n\nlast".encode("utf-8"))
    assert encode.read_sentences(tmp_path / "in.txt") == ["first", "sec\u2028ond", "", "last"]


def test_cli_normalize(tiny_bert_dir, tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(SENTENCES))
    assert (
        encode.main(
            [
                "--model",
                str(tiny_bert_dir),
                "--input",
                str(tmp_path / "in.txt"),
                "--output",
                str(tmp_path / "out.npy"),
                "--normalize",
                "--pooler",
                "cls",
            ]
        )
        == 0
    )
    np.testing.assert_allclose(np.linalg.norm(np.load(tmp_path / "out.npy"), axis=-1), 1.0, atol=1e-6)


def test_few_shapes_compile_for_many_lengths(tiny_distilbert_dir):
    loaded = hf.load_pretrained(str(tiny_distilbert_dir))
    sentences = [" ".join(["cat"] * n) for n in range(1, 63)]  # 62 distinct lengths, up to the limit
    embed = make_embed_fn(SentencePipeline(loaded.config, loaded.tokenizer), loaded.params, batch_size=8)
    embed(sentences)
    assert len(embed.compiled_shapes) <= len(bucket_lengths(64)) == 4
    assert {length for _, length in embed.compiled_shapes} <= {8, 16, 32, 64}
    assert bucket_lengths(512) == [8, 16, 32, 64, 128, 256, 512]  # A BERT-limit suite: ≤ 7 shapes.


def test_truncation_at_max_length(tiny_distilbert_dir):
    loaded = hf.load_pretrained(str(tiny_distilbert_dir))
    long_sentence = " ".join(["dog"] * 200)
    pipeline = SentencePipeline(loaded.config, loaded.tokenizer)
    embed = make_embed_fn(pipeline.replace(max_length=16), loaded.params)
    short = make_embed_fn(pipeline, loaded.params)
    np.testing.assert_allclose(embed([long_sentence]), short([" ".join(["dog"] * 14)]), atol=1e-6)
    assert embed.max_length == 16 and short.max_length == 64


@pytest.mark.parametrize("case", ["empty", "missing", "bad_model", "blank_only"])
def test_cli_bad_inputs_fail_cleanly(case, tiny_distilbert_dir, tmp_path, capsys):
    source = tmp_path / "in.txt"
    model = str(tiny_distilbert_dir)
    if case == "empty":
        source.write_text("")
    elif case == "blank_only":
        source.write_text("\n \n")
    elif case == "bad_model":
        source.write_text("a sentence\n")
        (tmp_path / "not_a_model").mkdir()
        model = str(tmp_path / "not_a_model")
    output = tmp_path / "out.npy"
    status = encode.main(["--model", model, "--input", str(source), "--output", str(output)])
    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith("error: ") and len(error.strip().splitlines()) == 1, error
    assert {
        "empty": "is empty",
        "blank_only": "only blank lines",
        "missing": "no such file",
        "bad_model": "config.json",
    }[case] in error
    assert not output.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.npy")] == []


def test_cli_follows_a_sentence_transformers_folder(minilm_dir, tmp_path, capsys):
    """all-MiniLM-L6-v2's folder says mean pooling + Normalize: `encode --model` gives exactly
    SentenceTransformer's vectors, unit length, with no flags."""
    from sentence_transformers import SentenceTransformer

    (tmp_path / "in.txt").write_text("\n".join(SENTENCES) + "\n")
    assert (
        encode.main(
            ["--model", str(minilm_dir), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "out.npy")]
        )
        == 0
    )
    ours = np.load(tmp_path / "out.npy")
    theirs = SentenceTransformer(str(minilm_dir), device="cpu").encode(SENTENCES, convert_to_numpy=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    assert "warning" not in capsys.readouterr().err


def test_cli_refuses_modules_it_does_not_apply(tiny_distilbert_dir, tmp_path, capsys):
    """A module whose step would be skipped makes the embeddings not the folder's own: one line
    naming it, exit 2, no output (it was a warning before issue 17 gave teacher and encode one policy)."""
    import json
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_distilbert_dir, folder)
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
            ]
        )
    )
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True})
    )
    (folder / "2_Dense").mkdir()
    (folder / "2_Dense" / "config.json").write_text(
        # ReLU: a linear Dense (a distilled student's kept width map) is applied, this one is not.
        json.dumps({"in_features": 32, "out_features": 8, "activation_function": "torch.nn.modules.activation.ReLU"})
    )
    (tmp_path / "in.txt").write_text("a cat\n")
    assert (
        encode.main(
            ["--model", str(folder), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "out.npy")]
        )
        == 2
    )
    error = capsys.readouterr().err
    assert error.startswith("error: ") and len(error.strip().splitlines()) == 1, error
    assert "not reproduced here: 2_Dense (sentence_transformers.models.Dense)" in error
    assert not (tmp_path / "out.npy").exists()


def test_cli_refuses_a_pooling_mode_it_cannot_apply_unless_told_the_pooler(tiny_distilbert_dir, tmp_path, capsys):
    """Max pooling is not one of ours: refused (it silently became mean pooling before), unless
    --pooler replaces the folder's pooling knowingly."""
    import json
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_distilbert_dir, folder)
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_max_tokens": True})
    )
    (tmp_path / "in.txt").write_text("\n".join(SENTENCES) + "\n")
    arguments = ["--model", str(folder), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "out.npy")]
    assert encode.main(arguments) == 2
    error = capsys.readouterr().err
    assert "1_Pooling (sentence_transformers.models.Pooling, a pooling mode other than cls or mean)" in error
    assert encode.main([*arguments, "--pooler", "avg"]) == 0
    np.testing.assert_allclose(
        np.load(tmp_path / "out.npy"), torch_mean_pooled(tiny_distilbert_dir, SENTENCES), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("command", ["encode", "evaluate"])
def test_cli_token_budget_bounds_every_batch_the_model_runs(command, tiny_distilbert_dir, tmp_path, monkeypatch):
    """`--tokens-per-batch 64`: no batch the model runs holds more than 64 tokens (rows x padded
    length); without it, the same command runs batches of up to --batch-size rows."""
    from distilface_jax import evaluate
    from distilface_jax.evaluation import inference
    from distilface_jax.training.tiny_data import write_tiny_sts

    shapes: list[tuple[int, int]] = []
    compiled = inference._compiled_embedder

    def recording(*args, **kwargs):  # Each batch the model is run on, as the device sees it.
        embed_batch = compiled(*args, **kwargs)

        def run(params, input_ids, attention_mask):
            shapes.append(tuple(input_ids.shape))
            return embed_batch(params, input_ids, attention_mask)

        return run

    monkeypatch.setattr(inference, "_compiled_embedder", recording)
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, size=rng.integers(3, 13))) for _ in range(40)]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    write_tiny_sts(str(tmp_path / "sts"))
    arguments = {
        "encode": ["--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "out.npy")],
        "evaluate": ["--sts-dir", str(tmp_path / "sts"), "--mode", "dev", "--no-progress"],
    }[command]
    main = {"encode": encode.main, "evaluate": evaluate.main}[command]
    largest = {}
    for budget in ([], ["--tokens-per-batch", "64"]):
        shapes.clear()
        assert main(["--model", str(tiny_distilbert_dir), "--batch-size", "32", *arguments, *budget]) == 0
        largest[bool(budget)] = max(rows * length for rows, length in shapes)
    assert largest[True] <= 64 < largest[False]
