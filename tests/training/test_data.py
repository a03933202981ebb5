"""data.py (reading, tokenizing, caching, order, host split) and tiny_data.py fixtures."""

from __future__ import annotations

import os

import numpy as np
import pytest

from distilface_jax.training import data, tiny_data


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def _ids(tokenizer, sentence, length=32):
    return tokenizer(sentence, padding="max_length", truncation=True, max_length=length)["input_ids"]


# ----------------------------------------------------------------------------- reading


def test_unsupervised_skips_and_counts_blank_lines(tmp_path, tokenizer):
    path = _write(
        tmp_path / "wiki.txt", "The man plays a guitar.\n\n   \nA dog chases the ball.\n\t\nOne bird sings.\n"
    )
    d = data.load_unsupervised(path, tokenizer, global_batch_size=2, max_seq_length=16)
    assert (d.num_examples, d.num_skipped_lines, d.num_views, d.max_seq_length) == (3, 3, 1, 16)
    assert d.steps_per_epoch == 1 and not d.from_cache
    assert set(d.arrays) == {"input_ids", "attention_mask", "token_type_ids"}  # BERT tokenizer
    for a in d.arrays.values():
        assert a.shape == (3, 1, 16) and a.dtype == np.int32
    # File order is kept; tokenization is the tokenizer's own.
    assert d.arrays["input_ids"][1, 0].tolist() == _ids(tokenizer, "A dog chases the ball.", 16)
    assert d.arrays["attention_mask"][1, 0].sum() == len(tokenizer("A dog chases the ball.")["input_ids"])


def test_tiny_corpus_blank_lines_counted_and_long_lines_truncated(tmp_path, tokenizer):
    path = str(tmp_path / "corpus.txt")
    sentences = tiny_data.write_tiny_corpus(path, num_sentences=500, seed=3, blank_lines=True)
    blanks = sum(1 for line in open(path, encoding="utf-8").read().split("\n")[:-1] if not line.strip())
    assert blanks > 0
    d = data.load_unsupervised(path, tokenizer, global_batch_size=64)
    assert d.num_examples == len(sentences) == 500 and d.num_skipped_lines == blanks
    assert d.arrays["attention_mask"].sum(-1).max() == 32  # some sentences hit max_seq_length


def test_token_type_ids_only_when_the_tokenizer_returns_them(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr(tokenizer, "model_input_names", ["input_ids", "attention_mask"])  # DistilBERT
    path = _write(tmp_path / "s.txt", "a man.\na dog.\n")
    d = data.load_unsupervised(path, tokenizer, global_batch_size=2)
    assert set(d.arrays) == {"input_ids", "attention_mask"}


def test_supervised_with_and_without_hard_negatives(tmp_path, tokenizer):
    path = _write(
        tmp_path / "nli.csv",
        "sent0,sent1,hard_neg\n"
        "a man plays a guitar,a man plays music,a woman eats bread\n"
        '"a dog, running",an animal runs,a cat sleeps\n'
        "a child reads,,a child sleeps\n"  # empty positive: skipped
        "NA,null,None\n",
    )  # real words, not missing values
    d = data.load_supervised(path, tokenizer, global_batch_size=3)
    assert (d.num_examples, d.num_views, d.num_skipped_lines) == (3, 3, 1)
    assert d.arrays["input_ids"].shape == (3, 3, 32)
    assert d.arrays["input_ids"][1, 0].tolist() == _ids(tokenizer, "a dog, running")
    assert d.arrays["input_ids"][0, 2].tolist() == _ids(tokenizer, "a woman eats bread")

    path = _write(tmp_path / "pairs.csv", "sent1,sent0\nb1,a1\nb2,a2\n")  # column order is free
    d = data.load_supervised(path, tokenizer, global_batch_size=2)
    assert d.num_views == 2 and d.num_skipped_lines == 0
    assert d.arrays["input_ids"][0, 0].tolist() == _ids(tokenizer, "a1")


def test_csv_without_expected_columns_names_file_and_found_columns(tmp_path, tokenizer):
    path = _write(tmp_path / "snli.csv", "premise,hypothesis\na,b\n")
    with pytest.raises(ValueError, match=r"snli\.csv.*sent0.*premise.*hypothesis"):
        data.load_supervised(path, tokenizer, global_batch_size=1)


def test_too_small_data_set_names_both_numbers(tmp_path, tokenizer):
    path = _write(tmp_path / "small.txt", "one.\ntwo.\n\nthree.\n")
    with pytest.raises(ValueError, match=r"small\.txt: 3 examples.*global batch of 8"):
        data.load_unsupervised(path, tokenizer, global_batch_size=8)


def test_missing_file_is_named(tmp_path, tokenizer):
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        data.load_unsupervised(missing, tokenizer, global_batch_size=1)


# ----------------------------------------------------------------------------- order


def test_order_is_a_pure_function_of_seed_epoch_position():
    n, gbs = 103, 10  # 10 steps per epoch, 3 examples dropped each epoch
    batches = [data.global_batch_indices(n, gbs, seed=7, step=s) for s in range(30)]
    # Same inputs, any call order -> same batch; another seed differs.
    for s in (25, 3, 17):
        assert (data.global_batch_indices(n, gbs, 7, s) == batches[s]).all()
    assert any((data.global_batch_indices(n, gbs, 8, s) != batches[s]).any() for s in range(3))
    # Each epoch: distinct examples, all in range, a different permutation than the last.
    epochs = [np.concatenate(batches[e * 10 : (e + 1) * 10]) for e in range(3)]
    for ep in epochs:
        assert len(np.unique(ep)) == 100 and ep.min() >= 0 and ep.max() < n
    assert (epochs[0] != epochs[1]).any()
    # Without a remainder every example appears exactly once per epoch.
    full = np.concatenate([data.global_batch_indices(40, 8, 0, s) for s in range(5, 10)])
    assert sorted(full.tolist()) == list(range(40))
    with pytest.raises(ValueError, match="fewer than one global batch"):
        data.global_batch_indices(5, 8, 0, 0)


def test_host_slices_concatenate_to_the_global_batch(tmp_path, tokenizer):
    path = str(tmp_path / "c.txt")
    tiny_data.write_tiny_corpus(path, num_sentences=100)
    d = data.load_unsupervised(path, tokenizer, global_batch_size=12, seed=5)
    for step in (0, 9, 10):  # 8 steps per epoch: 9 and 10 are in epoch 1
        whole = d.batch(step)
        idx = data.global_batch_indices(d.num_examples, 12, 5, step)
        for name, array in d.arrays.items():
            assert (whole[name] == array[idx]).all()
        for count in (2, 3, 4):
            parts = [d.batch(step, process_index=p, process_count=count) for p in range(count)]
            assert parts[0]["input_ids"].shape == (12 // count, 1, 32)
            for name in d.arrays:
                assert (np.concatenate([p[name] for p in parts]) == whole[name]).all()
    with pytest.raises(ValueError, match="12 is not divisible by process_count 5"):
        d.batch(0, process_index=0, process_count=5)


# ----------------------------------------------------------------------------- cache


def test_cache_hit_skips_reading_and_tokenizing(tmp_path, tokenizer, monkeypatch):
    path = str(tmp_path / "c.txt")
    tiny_data.write_tiny_corpus(path, num_sentences=120)
    cache = str(tmp_path / "cache")
    first = data.load_unsupervised(path, tokenizer, global_batch_size=8, cache_dir=cache)
    files = [f for f in os.listdir(cache) if f.endswith(".npz")]
    assert len(files) == 1 and not first.from_cache
    mtime = os.stat(os.path.join(cache, files[0])).st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("re-tokenized despite a cache hit")

    monkeypatch.setattr(data, "tokenize_views", boom)
    monkeypatch.setattr(data, "_read_unsupervised", boom)
    second = data.load_unsupervised(path, tokenizer, global_batch_size=8, cache_dir=cache)
    assert second.from_cache and second.num_skipped_lines == first.num_skipped_lines
    for name in first.arrays:
        assert (second.arrays[name] == first.arrays[name]).all()
    assert os.stat(os.path.join(cache, files[0])).st_mtime_ns == mtime
    monkeypatch.undo()

    # Another max_seq_length, or a modified file, is another key.
    data.load_unsupervised(path, tokenizer, global_batch_size=8, max_seq_length=16, cache_dir=cache)
    with open(path, "a", encoding="utf-8") as f:
        f.write("One more sentence.\n")
    third = data.load_unsupervised(path, tokenizer, global_batch_size=8, cache_dir=cache)
    assert not third.from_cache and third.num_examples == first.num_examples + 1
    assert len([f for f in os.listdir(cache) if f.endswith(".npz")]) == 3


def test_cache_write_is_atomic(tmp_path, tokenizer, monkeypatch):
    path = _write(tmp_path / "s.txt", "a man.\na dog.\na cat.\n")
    cache = tmp_path / "cache"
    real_savez = np.savez

    def killed_midway(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")  # what a killed process would leave behind
        raise KeyboardInterrupt

    monkeypatch.setattr(data.np, "savez", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        data.load_unsupervised(path, tokenizer, global_batch_size=2, cache_dir=str(cache))
    assert [f for f in os.listdir(cache) if not f.startswith("hf_datasets")] == []  # no cache, no temp

    monkeypatch.setattr(data.np, "savez", real_savez)
    d = data.load_unsupervised(path, tokenizer, global_batch_size=2, cache_dir=str(cache))
    (npz,) = [f for f in os.listdir(cache) if f.endswith(".npz")]
    # A corrupted cache file (not ours to produce, but disks fail) is ignored and rewritten.
    (cache / npz).write_bytes(b"garbage")
    again = data.load_unsupervised(path, tokenizer, global_batch_size=2, cache_dir=str(cache))
    assert not again.from_cache and (again.arrays["input_ids"] == d.arrays["input_ids"]).all()
    assert data.load_unsupervised(path, tokenizer, global_batch_size=2, cache_dir=str(cache)).from_cache


# ----------------------------------------------------------------------------- tiny_data


def test_tiny_fixtures_are_deterministic_and_in_senteval_format(tmp_path, tokenizer):
    for name in ("a", "b"):
        tiny_data.write_tiny_sts(str(tmp_path / name), seed=1)
    files = sorted(
        os.path.relpath(os.path.join(root, f), tmp_path / "a") for root, _, fs in os.walk(tmp_path / "a") for f in fs
    )
    assert "STS/STSBenchmark/sts-test.csv" in files and "SICK/SICK_test_annotated.txt" in files
    for year in range(12, 17):
        assert any(f.startswith(f"STS/STS{year}-en-test/STS.input.") for f in files)
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()

    rows = (tmp_path / "a/STS/STSBenchmark/sts-dev.csv").read_text().splitlines()
    scores = [float(r.split("\t")[4]) for r in rows]
    assert all(len(r.split("\t")) == 7 for r in rows) and 0 <= min(scores) and max(scores) <= 5
    sick = (tmp_path / "a/SICK/SICK_test_annotated.txt").read_bytes().decode()
    assert sick.startswith("pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\r\n")
    gold = (tmp_path / "a/STS/STS16-en-test/STS.gs.headlines.txt").read_text().split("\n")[:-1]
    pairs = (tmp_path / "a/STS/STS16-en-test/STS.input.headlines.txt").read_text().splitlines()
    assert len(gold) == len(pairs) and "" in gold  # unscored pairs, as in the real STS16
    # The vocab covers corpus and fixture: no [UNK].
    texts = [r.split("\t")[5] for r in rows] + [p.split("\t")[0] for p in pairs]
    assert all(tokenizer.unk_token_id not in ids for ids in tokenizer(texts)["input_ids"])
    assert tokenizer.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) == [0, 1, 2, 3, 4]
