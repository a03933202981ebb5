"""The token store (corpus.py, token_store.py, tokenize_workers.py, store_data.py) and prefetch.py.

The reference is today's in-memory path (`data.load_unsupervised` / `load_supervised`, which
reads through HF datasets' own text and csv builders): the store must serve the same rows in
the same order, whatever the shard size, worker count or host split.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

import numpy as np
import pytest

from distilface_jax.training import corpus, data, prefetch, resume, store_data, tiny_data, token_store, tokenize_workers

# Lines the in-memory path must agree with: blank and whitespace-only lines (skipped), "\r\n" and
# a lone "\r" (line ends for HF's text builder), non-ASCII text, a line longer than max_seq_length,
# a form feed and U+2028 (not line ends for it), and no final line break.
TRICKY = (
    "The man plays a guitar.\n\n   \nA dog chases the ball.\r\nOne bird sings.\rTwo cats sleep.\n"
    "Café naïve façade — déjà vu.\n\t\nsmall red car\x0cbig blue house\n"
    "a u\u2028b line with a separator\n" + " ".join(["word"] * 60) + "\nlast line without newline"
)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    """~310 lines: the tiny corpus with the tricky lines in the middle."""
    folder = tmp_path_factory.mktemp("corpus")
    path = folder / "corpus.txt"
    tiny_data.write_tiny_corpus(str(path), num_sentences=300, seed=4)
    lines = path.read_text(encoding="utf-8")
    path.write_bytes((lines[:4000] + TRICKY + "\n" + lines[4000:]).encode("utf-8"))
    return str(path)


def _store(path, tokenizer, cache, **kwargs):
    options = dict(fmt="unsup", global_batch_size=12, seed=3, max_seq_length=16, shard_bytes=700, show_progress=False)
    return store_data.load_store_data(path, tokenizer, cache_dir=str(cache), **{**options, **kwargs})


def _assert_same_batches(stored, memory, steps, process_counts=(1, 2, 4)):
    for step in steps:
        for count in process_counts:
            for index in range(count):
                got, want = stored.batch(step, index, count), memory.batch(step, index, count)
                assert list(got) == list(want)
                for name in want:
                    assert got[name].dtype == want[name].dtype == np.int32
                    np.testing.assert_array_equal(got[name], want[name], err_msg=f"{name}, step {step}")


# ----------------------------------------------------------------------------- same batches as in memory


def test_store_batches_equal_in_memory_batches_across_shards_and_hosts(tmp_path, tokenizer, corpus_file):
    memory = data.load_unsupervised(corpus_file, tokenizer, global_batch_size=12, seed=3, max_seq_length=16)
    stored = _store(corpus_file, tokenizer, tmp_path)
    assert len(stored.store.shards) > 20  # 700-byte shards: many boundaries to get right
    assert (stored.num_examples, stored.num_skipped_lines) == (memory.num_examples, memory.num_skipped_lines)
    assert (stored.num_views, stored.max_seq_length, stored.steps_per_epoch) == (1, 16, memory.steps_per_epoch)
    steps = range(0, 3 * memory.steps_per_epoch, 5)  # three epochs (three permutations)
    _assert_same_batches(stored, memory, steps)
    # Every row, in corpus order (the shard boundaries are where rows could be lost or repeated).
    every = stored.store.read_rows(np.arange(stored.num_examples))
    for name, array in memory.arrays.items():
        np.testing.assert_array_equal(every[name], array)


def test_supervised_csv_store_equals_in_memory(tmp_path, tokenizer):
    rows = ["sent0,sent1,hard_neg"] + [
        f'"a man {i}, plays",a dog {i},' + ("" if i % 7 == 0 else f"the cat {i}") for i in range(60)
    ]
    path = tmp_path / "nli.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    memory = data.load_supervised(str(path), tokenizer, global_batch_size=8, seed=1, max_seq_length=12)
    stored = _store(
        str(path),
        tokenizer,
        tmp_path / "cache",
        fmt="sup",
        global_batch_size=8,
        seed=1,
        max_seq_length=12,
        shard_bytes=128 * 9,
    )  # 9 rows a shard
    assert memory.num_views == stored.num_views == 3 and memory.num_skipped_lines == stored.num_skipped_lines > 0
    assert len(stored.store.shards) == 7
    _assert_same_batches(stored, memory, range(0, 20, 3))


def test_a_list_and_a_glob_read_as_their_files_concatenated(tmp_path, tokenizer):
    parts = []
    for i in range(3):
        part = tmp_path / f"part-{i}.txt"
        tiny_data.write_tiny_corpus(str(part), num_sentences=40, seed=10 + i)
        parts.append(part)
    whole = tmp_path / "whole.txt"
    whole.write_bytes(b"".join(p.read_bytes() for p in parts))
    memory = data.load_unsupervised(str(whole), tokenizer, global_batch_size=12, seed=3, max_seq_length=16)
    listed = _store(",".join(str(p) for p in parts), tokenizer, tmp_path / "a")
    globbed = _store(str(tmp_path / "part-*.txt"), tokenizer, tmp_path / "b")
    assert [s.name for s in corpus.resolve_inputs(str(tmp_path / "part-*.txt"))] == [str(p) for p in parts]
    for stored in (listed, globbed):
        _assert_same_batches(stored, memory, range(0, 9, 4), (1, 3))
    with pytest.raises(FileNotFoundError, match="nothing-\\*.txt"):
        corpus.resolve_inputs(str(tmp_path / "nothing-*.txt"))


def test_each_host_reads_only_its_rows(tmp_path, tokenizer, corpus_file):
    _store(corpus_file, tokenizer, tmp_path)  # built; each host then opens it and reads its rows
    hosts = [_store(corpus_file, tokenizer, tmp_path, process_index=i, process_count=2) for i in range(2)]
    asked = [[] for _ in hosts]
    for h, host in enumerate(hosts):
        real = host.store.read_rows
        host.store.read_rows = lambda idx, real=real, h=h: (asked[h].append(np.array(idx)), real(idx))[1]
    for step in range(7):
        for index, host in enumerate(hosts):
            host.batch(step, index, 2)
    for index, host in enumerate(hosts):
        assert host.store.rows_read == 7 * 6  # half of each global batch of 12, nothing more
        slices = [data.global_batch_indices(host.num_examples, 12, 3, s)[6 * index : 6 * index + 6] for s in range(7)]
        np.testing.assert_array_equal(np.concatenate(asked[index]), np.concatenate(slices))


# ----------------------------------------------------------------------------- building


def _shard_files(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def test_two_workers_write_the_same_shards_as_one(tmp_path, tokenizer, corpus_file):
    one = _store(corpus_file, tokenizer, tmp_path / "one", num_workers=1)
    two = _store(corpus_file, tokenizer, tmp_path / "two", num_workers=2, shard_bytes=700)
    assert os.path.basename(one.store.folder) == os.path.basename(two.store.folder)
    files_one, files_two = _shard_files(one.store.folder), _shard_files(two.store.folder)
    assert len(files_one) == 2 * len(one.store.shards) + 1 and files_one == files_two


def test_interrupted_build_resumes_from_the_shards_written(tmp_path, tokenizer, corpus_file, monkeypatch):
    real = corpus.read_shard
    calls = []

    def killed_at_shard_5(source, spec, fmt, hf_cache_dir):
        calls.append(spec)
        if len(calls) == 6:
            raise KeyboardInterrupt  # Ctrl-C while tokenizing shard 5
        return real(source, spec, fmt, hf_cache_dir)

    monkeypatch.setattr(corpus, "read_shard", killed_at_shard_5)
    with pytest.raises(KeyboardInterrupt):
        _store(corpus_file, tokenizer, tmp_path / "cache")
    (folder,) = (tmp_path / "cache" / "store").iterdir()
    assert sorted(f.name for f in folder.glob("*.json") if f.name != "plan.json")[-1] == "shard-00004.json"
    (folder / ".shard-00005.npy.tmp-killed").write_bytes(b"half")  # what a SIGKILL leaves behind

    calls.clear()
    monkeypatch.setattr(corpus, "read_shard", lambda *a: (calls.append(a[1]), real(*a))[1])
    resumed = _store(corpus_file, tokenizer, tmp_path / "cache")
    assert len(calls) == len(resumed.store.shards) - 5 and calls[0] == corpus.ShardSpec(
        *resumed.store.plan["shards"][5]
    )
    assert not list(folder.glob(".shard-*tmp*"))
    fresh = _store(corpus_file, tokenizer, tmp_path / "fresh")
    assert _shard_files(resumed.store.folder) == _shard_files(fresh.store.folder)


def test_missing_or_truncated_shard_is_named_and_tokenized_again(tmp_path, tokenizer, corpus_file, caplog):
    first = _store(corpus_file, tokenizer, tmp_path)
    folder = first.store.folder
    reference = _shard_files(folder)
    os.unlink(os.path.join(folder, "shard-00003.npy"))
    with open(os.path.join(folder, "shard-00007.npy"), "r+b") as handle:
        handle.truncate(200)
    # Opened without rebuilding: refused, one line naming the file.
    with pytest.raises(token_store.StoreError, match="shard-00003.npy: missing") as error:
        token_store.TokenStore(folder)
    assert "\n" not in str(error.value)
    # Through the loader: both named and tokenized again, identical to before.
    with caplog.at_level(logging.WARNING):
        again = _store(corpus_file, tokenizer, tmp_path)
    assert not again.from_cache
    assert "shard-00003.npy: missing" in caplog.text and "shard-00007.npy: size 200 bytes differs" in caplog.text
    assert _shard_files(folder) == reference


def test_corrupt_rows_are_refused_never_read(tmp_path, tokenizer, corpus_file):
    stored = _store(corpus_file, tokenizer, tmp_path)
    shard = stored.store.shards[2]
    with open(shard.path, "r+b") as handle:  # same size, one token changed
        handle.seek(shard.data_offset + 4)
        handle.write(np.int32(7).tobytes())
    reopened = token_store.TokenStore(stored.store.folder)
    with pytest.raises(token_store.StoreError, match=r"shard-00002.npy: rows 0\.\.\d+ do not match their digest"):
        reopened.read_rows([shard.first_row])
    reopened.read_rows([stored.store.shards[1].first_row])  # other shards still read


def test_changed_corpus_is_detected_and_gets_a_new_store(tmp_path, tokenizer, caplog):
    path = tmp_path / "c.txt"
    tiny_data.write_tiny_corpus(str(path), num_sentences=60)
    first = _store(str(path), tokenizer, tmp_path / "cache")
    assert _store(str(path), tokenizer, tmp_path / "cache").from_cache
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("one more sentence .\n")
    with caplog.at_level(logging.WARNING):
        second = _store(str(path), tokenizer, tmp_path / "cache")
    assert f"{path} changed since the token store {first.store.folder} was built" in caplog.text
    assert second.num_examples == first.num_examples + 1 and second.store.folder != first.store.folder
    # A plan of another corpus where this one's store should be is refused, not mixed in.
    plan = json.loads((tmp_path / "cache" / "store" / os.path.basename(second.store.folder) / "plan.json").read_text())
    plan["shards"] = plan["shards"][:-1]
    with pytest.raises(token_store.StoreError, match="plan"):
        token_store.write_plan(second.store.folder, plan)


def test_bucket_store_is_built_there_and_read_from_a_local_copy(tmp_path, tokenizer, corpus_file):
    # A "bucket" that is a local folder: the same copy-up / copy-down path a gs:// store takes.
    local_store = _store(corpus_file, tokenizer, tmp_path / "plain")
    plan = local_store.store.plan
    sources = corpus.resolve_inputs(corpus_file)
    bucket, hosts = tmp_path / "bucket", [tmp_path / "host0", tmp_path / "host1"]
    threads = [
        threading.Thread(
            target=tokenize_workers.build,
            args=(str(bucket), str(host), sources, plan, tokenizer),
            kwargs=dict(hf_cache_dir=None, process_index=i, process_count=2, show_progress=False),
            daemon=True,  # a host waiting forever for the other's shards must not hang the test run
        )
        for i, host in enumerate(hosts)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    expected = _shard_files(local_store.store.folder)
    assert _shard_files(bucket) == expected
    for host in hosts:
        files = {k: v for k, v in _shard_files(host).items() if not k.startswith(".")}
        assert files == expected


# ----------------------------------------------------------------------------- prefetch and resume


def test_prefetch_delivers_every_step_in_order_and_raises_at_the_failing_step():
    rng = np.random.default_rng(0)
    delays = rng.uniform(0, 0.004, 40)

    def make(step):
        time.sleep(delays[step])
        if step == 33:
            raise ValueError("bad row at step 33")
        return {"step": step}

    batches = prefetch.Batches(make, 5, 40, depth=3)
    for step in range(5, 33):
        got, batch, wait_ms = batches.next()
        assert got == step and batch == {"step": step} and wait_ms >= 0
    with pytest.raises(ValueError, match="step 33"):
        batches.next()
    batches.close()
    # A closed prefetcher with a full queue stops its thread.
    blocked = prefetch.Batches(lambda s: s, 0, 1000, depth=2)
    time.sleep(0.05)
    blocked.close()
    assert not blocked._thread.is_alive()
    # Depth 0: no thread, the wait is the batch's own time.
    inline = prefetch.Batches(lambda s: time.sleep(0.01) or s, 0, 2, depth=0)
    assert inline.next()[2] >= 10 and inline._thread is None


def test_old_run_configs_resume_with_the_new_data_keys():
    from distilface_jax.config.base import base_config

    current = json.loads(base_config().to_json_best_effort())
    saved = json.loads(json.dumps(current))
    for key in ("token_store", "store_dir", "store_shard_bytes", "num_workers", "prefetch"):
        del saved["data"][key]  # a checkpoint written before these keys existed
    resume.check_resumable(saved, current, {}, {}, "old run")
    current["data"].update(token_store=True, num_workers=2, prefetch=0)
    resume.check_resumable(saved, current, {}, {}, "old run")


def test_train_file_lists_and_globs_are_checked_before_training(tmp_path):
    from distilface_jax.cli import checks
    from distilface_jax.cli.policy import UsageError

    good, latin1 = tmp_path / "a.txt", tmp_path / "b.txt"
    good.write_text("one sentence\n", encoding="utf-8")
    latin1.write_bytes("caf\xe9\n".encode("latin-1"))
    checks.check_train_file(f"{good},{tmp_path / 'a*.txt'}")
    with pytest.raises(UsageError, match=r"nope-\*.txt matches no file"):
        checks.check_train_file(f"{good},{tmp_path / 'nope-*.txt'}")
    with pytest.raises(UsageError, match="b.txt: line 1: not UTF-8"):
        checks.check_train_file(str(tmp_path / "*.txt"))


def test_epoch_order_is_numpys_permutation_in_four_bytes_an_example():
    for num_examples in (1, 2, 1000, 2**16 + 7, 300_001):
        for seed, epoch in ((0, 0), (3, 1), (12345, 7)):
            order = data._epoch_permutation(num_examples, seed, epoch)
            assert order.dtype == np.int32
            np.testing.assert_array_equal(order, np.random.default_rng([seed, epoch]).permutation(num_examples))
