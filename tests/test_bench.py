"""bench.py's GPU section, run on the CPU with a tiny random Llama: the bundled tokenizer cut to Llama-2's
vocabulary, and every measurement of the section (scoring, the summarizer, train.py on one process and under a
two-process torchrun) running end to end. Its numbers are measured, not asserted."""
import json
import os
import subprocess
import sys

import bench
import llm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = ("Category: sports; SubCategory: football_nfl; Title: Patriots beat the Jets 31-10 as Brady throws three "
        "touchdowns in a snowy Foxborough afternoon")


def test_the_bundled_tokenizer_cut_to_llamas_vocabulary():
    full = llm.load_tokenizer(llm.DEFAULT_MODEL)
    cut = bench.llama_sized_tokenizer(full)
    assert len(cut) == bench.LLAMA_VOCAB == 32_000
    ids, full_ids = cut(TEXT)["input_ids"], full(TEXT)["input_ids"]
    assert max(ids) < 32_000 and cut.decode(ids) == TEXT  # every text is still written, in ids the head has
    assert len(full_ids) <= len(ids) <= 1.3 * len(full_ids)  # only the rarest merges are gone
    assert [cut.pad_token_id, cut.eos_token_id] == [full.pad_token_id, full.eos_token_id]
    assert llm.answer_token_ids(cut) == llm.answer_token_ids(full)  # Yes and No are frequent: kept


def test_the_gpu_section_runs_on_a_cpu_with_a_tiny_llama(tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, "bench.py", "--only", "gpu", "--size", "tiny", "--users", "2", "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True, text=True, timeout=600)
    result = json.load(open(out))["gpu"]
    assert result["vocabulary"] == 32_000 and result["device"] == "cpu"
    assert set(result["train_tokens_per_second"]) == {"1", "2"}  # one process, and FSDP2 over gloo with two
    assert all(rate > 0 for rate in result["train_tokens_per_second"].values())
    assert set(result["summarize_tokens_per_second"]) == {"fp32"} and result["score_candidates_per_second"] > 0
