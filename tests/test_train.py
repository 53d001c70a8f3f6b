"""The recommender prompt (exact strings, the token budget, Yes/No tokens) and train.py (loss falls, resume
equals an uninterrupted run, two processes equal one, a NaN stops the run)."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import data
import evaluate
import prompts
import trsr
from tests.tiny import build_tokenizer, tiny_model_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")

NEWS = ["Category: sports; SubCategory: football_nfl; Title: The team wins again",
        "Category: news; SubCategory: newspolitics; Title: Senate votes on the budget",
        "Category: travel; SubCategory: travelnews; Title: Flights diverted after storm",
        "Category: foodanddrink; SubCategory: recipes; Title: Three new recipes for the week",
        "Category: finance; SubCategory: markets; Title: Stocks close higher",
        "Category: sports; SubCategory: basketball_nba; Title: A record night in the league"]


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def make_data(root, n_users=8, history_len=6, dataset="mind"):
    """A DATA folder in data.py's format, and a summaries file; returns (data_dir, summaries_path)."""
    data_dir = os.path.join(str(root), "data")
    os.makedirs(data_dir, exist_ok=True)
    items = [{"id": f"N{i}", "text": NEWS[i % len(NEWS)] + f" {i}"} for i in range(30)]
    write_jsonl(os.path.join(data_dir, "items.jsonl"), items)
    users = [{"user": f"U{u}", "history": [f"N{(u + k) % 30}" for k in range(history_len)],
              "target": f"N{(u + history_len) % 30}", "negatives": [f"N{(u * 7 + 3) % 30}"]} for u in range(n_users)]
    write_jsonl(os.path.join(data_dir, "train.jsonl"), users)
    for split in ("val", "test"):
        write_jsonl(os.path.join(data_dir, f"{split}.jsonl"), [])
    with open(os.path.join(data_dir, "meta.json"), "w") as f:
        json.dump({"dataset": dataset}, f)
    summaries = os.path.join(str(root), "summaries.jsonl")
    write_jsonl(summaries, [{"user": u["user"], "paradigm": "hierarchical", "steps": [],
                             "summary": f"This user enjoys sports and politics, user {i}."} for i, u in enumerate(users)])
    return data_dir, summaries


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


# ---- prompts ----

def test_figure8_prompt_exact():
    text = prompts.render_recommender("shopping", "Likes bath mats.", ["Title: Mat", "Title: Towel"], "Title: Soap", "Yes")
    assert text == (
        "### User:\n"
        "Given a preference summary of the user, and information related to the historical items the user has "
        "purchased, predict whether the user will click on the given next product. Note that the preference "
        "summary captures long-term interests, while the recent items indicate short term interests. Both of "
        "them should be holistically considered for a more comprehensive understanding of user behavior. "
        "Please output 'Yes' or 'No'.\n\n"
        "[Preference Summary]\nLikes bath mats.\n\n"
        "[Historical Items]\n1. Title: Mat\n2. Title: Towel\n\n"
        "[Next Item]\nTitle: Soap\n\n"
        "### Assistant:\nYes")


def test_news_and_ablation_prompts_exact():
    assert prompts.render_recommender("news", "Likes sports.", ["Category: a"], "Category: b") == (
        "### User:\n"
        "Given a preference summary of the user, and information related to the historical news the user has "
        "read, predict whether the user will click on the given next news. Note that the preference summary "
        "captures long-term interests, while the recent news indicate short term interests. Both of them should "
        "be holistically considered for a more comprehensive understanding of user behavior. Please output "
        "'Yes' or 'No'.\n\n"
        "[Preference Summary]\nLikes sports.\n\n"
        "[Historical News]\n1. Category: a\n\n"
        "[Next News]\nCategory: b\n\n"
        "### Assistant:\n")
    # 0 recent items: the summary only, and the instruction does not mention recent items
    assert prompts.render_recommender("news", "Likes sports.", [], "Category: b") == (
        "### User:\n"
        "Given a preference summary of the user, predict whether the user will click on the given next news. "
        "Note that the preference summary captures the user's long-term interests. Please output 'Yes' or 'No'.\n\n"
        "[Preference Summary]\nLikes sports.\n\n"
        "[Next News]\nCategory: b\n\n"
        "### Assistant:\n")
    # no summary (and TALLRec mode): the items only
    assert prompts.render_recommender("shopping", None, ["Title: Mat"], "Title: Soap", "No") == (
        "### User:\n"
        "Given information related to the historical items the user has purchased, predict whether the user "
        "will click on the given next product. Please output 'Yes' or 'No'.\n\n"
        "[Historical Items]\n1. Title: Mat\n\n"
        "[Next Item]\nTitle: Soap\n\n"
        "### Assistant:\nNo")
    with pytest.raises(AssertionError):
        prompts.render_recommender("news", None, [], "Category: b")


def test_prefix_plus_suffix_is_the_prompt():
    prefix = prompts.render_recommender_prefix("news", "S.", ["a", "b"])
    assert prefix + prompts.render_recommender_suffix("c") == prompts.render_recommender("news", "S.", ["a", "b"], "c")
    assert prefix.endswith("[Next News]\n")


def test_recommender_inputs(tmp_path):
    data_dir, summaries_path = make_data(tmp_path)
    items, summaries = data.load_items(data_dir), data.load_summaries(summaries_path)
    user = data.load_split(data_dir, "train")[0]
    summary, history = trsr.recommender_inputs(user, items, summaries, recent=3)
    assert summary == summaries["U0"] and history == [items[i] for i in user["history"][-3:]]
    assert trsr.recommender_inputs(user, items, summaries, recent=0)[1] == []
    assert trsr.recommender_inputs(user, items, {}, use_summary=False, whole_history=True) == (
        None, [items[i] for i in user["history"]])
    with pytest.raises(ValueError, match=r"user 'U0' has no summary in s\.jsonl"):
        trsr.recommender_inputs(user, items, {}, summaries_path="s.jsonl")
    with pytest.raises(ValueError, match=r"user 'U0': item 'N4' is not in items\.jsonl"):
        trsr.recommender_inputs(user, {k: v for k, v in items.items() if k != "N4"}, summaries)


# ---- token budget ----

def test_budget_keeps_what_fits_untouched(tokenizer):
    prefix, suffixes, shortened = trsr.fit_recommender_prompt(tokenizer, "news", "S.", NEWS[:3], [NEWS[4]], 2048)
    assert not shortened
    assert prefix + suffixes[0] == prompts.render_recommender("news", "S.", NEWS[:3], NEWS[4])


def test_budget_never_cuts_the_candidate(tokenizer):
    summary = "This user enjoys travel, sports and food. " * 30
    history, candidate = NEWS * 4, "Category: finance; SubCategory: markets; Title: A long candidate " * 5
    # the least a prompt can be: summary and last item cut down to their marks
    fixed = trsr.count_tokens(tokenizer, prompts.render_recommender("news", "...", ["..."], candidate)) + 1
    for max_len in (fixed + 400, fixed + 100, fixed + 40, fixed + 2):
        prefix, (suffix,), shortened = trsr.fit_recommender_prompt(tokenizer, "news", summary, history, [candidate], max_len)
        assert shortened
        assert trsr.count_tokens(tokenizer, prefix + suffix) + 1 <= max_len
        assert suffix == prompts.render_recommender_suffix(candidate)  # the candidate is whole
        assert prefix.startswith(prompts.REC_USER + prompts.REC_INSTRUCTION[("news", "summary+items")])
    # order: old items go first, the most recent one stays while the summary is cut
    prefix, _, _ = trsr.fit_recommender_prompt(tokenizer, "news", summary, history, [candidate], fixed + 100)
    assert "1. " + history[-1] in prefix and history[-2] not in prefix and summary not in prefix
    assert "[Preference Summary]\nThis user" in prefix and " ...\n\n[Historical News]" in prefix
    with pytest.raises(ValueError, match="raise --max-len"):
        trsr.fit_recommender_prompt(tokenizer, "news", summary, history, [candidate], fixed - 5)


def test_budget_fits_every_candidate_with_one_prefix(tokenizer):
    candidates = [NEWS[0], NEWS[1] * 6, NEWS[2]]
    prefix, suffixes, shortened = trsr.fit_recommender_prompt(tokenizer, "news", "S. " * 300, NEWS * 3, candidates, 700)
    assert shortened and len(suffixes) == 3
    assert max(trsr.count_tokens(tokenizer, prefix + s) for s in suffixes) + 1 <= 700


# ---- Yes/No tokens ----

def test_answer_tokens(tokenizer):
    yes_id, no_id = trsr.answer_token_ids(tokenizer)
    assert tokenizer.decode([yes_id]) == "Yes" and tokenizer.decode([no_id]) == "No"
    # a leading space or newline makes a different token: the answer follows "\n" directly
    assert tokenizer(" Yes", add_special_tokens=False)["input_ids"] != [yes_id]
    prompt = prompts.render_recommender("news", "S.", NEWS[:1], NEWS[1])
    assert tokenizer(prompt + "Yes")["input_ids"] == tokenizer(prompt)["input_ids"] + [yes_id]
    prefix, suffix = trsr.encode_prompt(tokenizer, prompts.render_recommender_prefix("news", "S.", NEWS[:1]),
                                        prompts.render_recommender_suffix(NEWS[1]))
    assert prefix + suffix == tokenizer(prompt)["input_ids"]


def test_answer_tokens_fail_clearly_when_not_single_tokens(tokenizer):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())  # a tokenizer that never learned "Yes" as one token
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["hello world"] * 5, trainers.BpeTrainer(vocab_size=280, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bad = PreTrainedTokenizerFast(tokenizer_object=tok)
    with pytest.raises(ValueError, match=r"'Yes' .* does not tokenize as one extra token"):
        trsr.answer_token_ids(bad)


# ---- train.py ----

def run_train(out, data_dir, summaries, model, *extra, nproc=1, check=True):
    base = ["--data", data_dir, "--summaries", summaries, "--out", str(out), "--model", model,
            "--grad-accum", "4", "--batch-size", "1", "--lr", "1e-2", "--lora-dropout", "0", "--seed", "1"]
    cmd = ([TORCHRUN, "--standalone", "--nproc_per_node", str(nproc)] if nproc > 1 else [PYTHON]) + ["train.py"]
    result = subprocess.run(cmd + base + list(extra), cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    if check and result.returncode != 0:
        raise AssertionError(f"train.py failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def losses(out):
    return [r["loss"] for r in data.read_jsonl(os.path.join(str(out), "log.jsonl"))]


def adapter(folder):
    return load_file(os.path.join(str(folder), "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    data_dir, summaries = make_data(root)
    return root, data_dir, summaries, tiny_model_dir(root)


@pytest.fixture(scope="module")
def full_run(setup):
    """One uninterrupted run: 8 users -> 16 samples -> 4 steps per epoch, 2 epochs."""
    root, data_dir, summaries, model = setup
    out = root / "full"
    result = run_train(out, data_dir, summaries, model, "--epochs", "2", "--save-every", "3")
    return out, result


def test_loss_falls_and_outputs(full_run):
    out, result = full_run
    log = data.read_jsonl(os.path.join(out, "log.jsonl"))
    assert [r["step"] for r in log] == list(range(1, 9))
    # a tiny random model's prompt loss starts near ln(vocabulary) and LoRA moves it only a little
    first, last = sum(losses(out)[:2]) / 2, sum(losses(out)[-2:]) / 2
    assert last < first - 0.08, losses(out)
    # the authors' schedule: 2 warm-up steps, then constant
    assert [r["lr"] for r in log] == pytest.approx([5e-3] + [1e-2] * 7)
    assert "dtype float32 (CPU" in result.stdout and "step 8/8 | epoch 2 | loss" in result.stdout
    # the adapter of each epoch loads with peft
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(json.load(open(os.path.join(out, "config.json")))["model"])
    model = PeftModel.from_pretrained(base, os.path.join(out, "epoch_2"))
    trained = adapter(os.path.join(out, "epoch_2"))
    name = next(k for k in trained if "lora_B" in k)
    assert trained[name].abs().sum() > 0  # lora_B starts at zero: it learned
    assert os.path.isdir(os.path.join(out, "epoch_1")) and os.path.isfile(os.path.join(out, "last", "optimizer.pt"))
    state = torch.load(os.path.join(out, "last", "state.pt"), weights_only=True)
    assert state["step"] == 8 and state["config"]["epochs"] == 2
    del model


def test_answer_loss_falls_and_micro_batch_is_only_a_speed_setting(setup):
    """--loss answer learns the Yes/No token; padded micro batches of 2 give the losses of micro batch 1."""
    root, data_dir, summaries, model = setup
    a, b = root / "answer_b2", root / "answer_b1"
    run_train(a, data_dir, summaries, model, "--epochs", "3", "--loss", "answer", "--batch-size", "2", "--grad-accum", "2")
    run_train(b, data_dir, summaries, model, "--epochs", "3", "--loss", "answer")
    assert losses(a) == pytest.approx(losses(b), rel=1e-4)
    # the answer starts at ~ln(vocabulary) = 6; a frozen final norm keeps the tiny model from going far below 5
    assert sum(losses(a)[-3:]) / 3 < losses(a)[0] - 0.5, losses(a)


def test_resume_equals_uninterrupted(setup, full_run):
    root, data_dir, summaries, model = setup
    out = root / "resumed"
    # stop mid-epoch 2 (step 6 of 8), after a checkpoint that is not at an epoch's end
    run_train(out, data_dir, summaries, model, "--epochs", "2", "--save-every", "3", "--stop-after", "6")
    assert len(losses(out)) == 6
    refused = run_train(out, data_dir, summaries, model, "--epochs", "2", "--save-every", "3", check=False)
    assert refused.returncode != 0 and "pass --resume" in refused.stderr  # never overwrites a run silently
    changed = run_train(out, data_dir, summaries, model, "--epochs", "2", "--lr", "1e-3", "--resume", check=False)
    assert changed.returncode != 0 and "--lr 0.001 (was 0.01)" in changed.stderr
    run_train(out, data_dir, summaries, model, "--epochs", "2", "--save-every", "3", "--resume")
    assert losses(out) == pytest.approx(losses(full_run[0]), rel=1e-6)
    a, b = adapter(out / "epoch_2"), adapter(full_run[0] / "epoch_2")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)


@pytest.fixture(scope="module")
def two_run(setup):
    """The full run's flags under a two-process torchrun (FSDP2, gloo)."""
    root, data_dir, summaries, model = setup
    out = root / "two"
    run_train(out, data_dir, summaries, model, "--epochs", "2", nproc=2)
    return out


def test_two_processes_equal_one(two_run, full_run):
    out = two_run
    assert losses(out) == pytest.approx(losses(full_run[0]), rel=1e-4)
    a, b = adapter(out / "epoch_2"), adapter(full_run[0] / "epoch_2")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a)


def test_activation_checkpointing_changes_no_loss(setup, full_run, two_run):
    """--grad-checkpoint recomputes activations in the backward pass: the same losses, step for step, in one
    process and under FSDP2 with two."""
    root, data_dir, summaries, model = setup
    one = root / "checkpointed"
    result = run_train(one, data_dir, summaries, model, "--epochs", "2", "--grad-checkpoint")
    assert "activation checkpointing" in result.stdout
    assert losses(one) == pytest.approx(losses(full_run[0]), abs=1e-5)
    two = root / "checkpointed-two"
    run_train(two, data_dir, summaries, model, "--epochs", "2", "--grad-checkpoint", nproc=2)
    assert losses(two) == pytest.approx(losses(two_run), abs=1e-5)


def test_bf16_under_two_processes_is_the_gpu_path(setup, full_run):
    """What a GPU runs, on CPU: bf16 base weights with LoRA weights in fp32 (peft keeps adapters in fp32),
    both in one FSDP2 unit, then the adapter scored by evaluate.py in bf16. Losses and scores follow fp32's
    within bf16's precision; the saved adapter is fp32."""
    root, data_dir, summaries, model = setup
    out = root / "bf16-two"
    result = run_train(out, data_dir, summaries, model, "--epochs", "2", "--dtype", "bfloat16", nproc=2)
    assert "dtype bfloat16" in result.stdout
    assert losses(out) == pytest.approx(losses(full_run[0]), rel=2e-2)
    trained = adapter(out / "epoch_2")
    assert {t.dtype for t in trained.values()} == {torch.float32}
    assert any(t.abs().sum() > 0 for k, t in trained.items() if "lora_B" in k)
    scoring = str(root / "bf16-data")  # the training users, scored as a test split
    shutil.copytree(data_dir, scoring)
    write_jsonl(os.path.join(scoring, "test.jsonl"), data.read_jsonl(os.path.join(data_dir, "train.jsonl"))[:2])
    p = {}
    for dtype in ("bfloat16", "float32"):
        evaluate.main(evaluate.parser.parse_args(["--data", scoring, "--summaries", summaries, "--adapter",
                                                  str(out / "epoch_2"), "--out", str(root / f"eval-{dtype}"),
                                                  "--dtype", dtype]))
        p[dtype] = [x for r in data.read_jsonl(os.path.join(root, f"eval-{dtype}", "scores.jsonl")) for x in r["p"]]
    assert len(p["bfloat16"]) == 2 * 2 and p["bfloat16"] != p["float32"]  # bf16 was used, and scores alike
    assert p["bfloat16"] == pytest.approx(p["float32"], abs=2e-2)


def test_nan_stops_and_keeps_the_last_checkpoint(setup):
    root, data_dir, summaries, model = setup
    out = root / "nan"
    result = run_train(out, data_dir, summaries, model, "--epochs", "1", "--save-every", "1", "--lr", "1e30",
                       "--grad-clip", "0", check=False)
    assert result.returncode != 0
    assert "stopping. The last good checkpoint" in result.stdout
    state = torch.load(os.path.join(out, "last", "state.pt"), weights_only=True)
    assert all(map(lambda x: x == x and abs(x) != float("inf"), losses(out)))
    assert state["step"] == len(losses(out)) >= 1


def test_missing_summary_is_named(setup, tmp_path):
    root, data_dir, summaries, model = setup
    partial = tmp_path / "partial.jsonl"
    write_jsonl(partial, data.read_jsonl(summaries)[1:])
    result = run_train(tmp_path / "out", data_dir, str(partial), model, "--epochs", "1", check=False)
    assert result.returncode != 0 and f"user 'U0' has no summary in {partial}" in result.stderr
