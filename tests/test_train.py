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
import llm
import prompts
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


def make_data(root, n_users=8, history_len=6, dataset="mind", negatives=1, name="data", n_val=0):
    """A DATA folder in data.py's format, and a summaries file; returns (data_dir, summaries_path). Training users
    have `negatives` saved negatives; the n_val validation users have 20, as data.py saves them."""
    data_dir = os.path.join(str(root), name)
    os.makedirs(data_dir, exist_ok=True)
    items = [{"id": f"N{i}", "text": NEWS[i % len(NEWS)] + f" {i}"} for i in range(30)]
    write_jsonl(os.path.join(data_dir, "items.jsonl"), items)
    users = [{"user": f"U{u}", "history": [f"N{(u + k) % 30}" for k in range(history_len)],
              "target": f"N{(u + history_len) % 30}",
              "negatives": [f"N{(u * 7 + 3 + 11 * j) % 30}" for j in range(negatives)]} for u in range(n_users)]
    write_jsonl(os.path.join(data_dir, "train.jsonl"), users)
    val = [{"user": f"V{u}", "history": [f"N{(3 * u + k) % 30}" for k in range(history_len)],
            "target": f"N{(3 * u + history_len) % 30}",
            "negatives": [f"N{(3 * u + history_len + 1 + j) % 30}" for j in range(20)]} for u in range(n_val)]
    write_jsonl(os.path.join(data_dir, "val.jsonl"), val)
    write_jsonl(os.path.join(data_dir, "test.jsonl"), [])
    users += val
    with open(os.path.join(data_dir, "meta.json"), "w") as f:
        json.dump({"dataset": dataset}, f)
    summaries = os.path.join(str(root), "summaries.jsonl" if name == "data" else f"summaries-{name}.jsonl")
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
    summary, history = llm.recommender_inputs(user, items, summaries, recent=3)
    assert summary == summaries["U0"] and history == [items[i] for i in user["history"][-3:]]
    assert llm.recommender_inputs(user, items, summaries, recent=0)[1] == []
    assert llm.recommender_inputs(user, items, {}, use_summary=False, whole_history=True) == (
        None, [items[i] for i in user["history"]])
    with pytest.raises(ValueError, match=r"user 'U0' has no summary in s\.jsonl"):
        llm.recommender_inputs(user, items, {}, summaries_path="s.jsonl")
    with pytest.raises(ValueError, match=r"user 'U0': item 'N4' is not in items\.jsonl"):
        llm.recommender_inputs(user, {k: v for k, v in items.items() if k != "N4"}, summaries)


# ---- token budget ----

def test_budget_keeps_what_fits_untouched(tokenizer):
    prefix, suffixes, shortened = llm.fit_recommender_prompt(tokenizer, "news", "S.", NEWS[:3], [NEWS[4]], 2048)
    assert not shortened
    assert prefix + suffixes[0] == prompts.render_recommender("news", "S.", NEWS[:3], NEWS[4])


def test_budget_never_cuts_the_candidate(tokenizer):
    summary = "This user enjoys travel, sports and food. " * 30
    history, candidate = NEWS * 4, "Category: finance; SubCategory: markets; Title: A long candidate " * 5
    # the least a prompt can be: summary and last item cut down to their marks
    fixed = llm.count_tokens(tokenizer, prompts.render_recommender("news", "...", ["..."], candidate)) + 1
    for max_len in (fixed + 400, fixed + 100, fixed + 40, fixed + 2):
        prefix, (suffix,), shortened = llm.fit_recommender_prompt(tokenizer, "news", summary, history, [candidate], max_len)
        assert shortened
        assert llm.count_tokens(tokenizer, prefix + suffix) + 1 <= max_len
        assert suffix == prompts.render_recommender_suffix(candidate)  # the candidate is whole
        assert prefix.startswith(prompts.REC_USER + prompts.REC_INSTRUCTION[("news", "summary+items")])
    # order: old items go first, the most recent one stays while the summary is cut
    prefix, _, _ = llm.fit_recommender_prompt(tokenizer, "news", summary, history, [candidate], fixed + 100)
    assert "1. " + history[-1] in prefix and history[-2] not in prefix and summary not in prefix
    assert "[Preference Summary]\nThis user" in prefix and " ...\n\n[Historical News]" in prefix
    with pytest.raises(ValueError, match="raise --max-len"):
        llm.fit_recommender_prompt(tokenizer, "news", summary, history, [candidate], fixed - 5)


def test_budget_fits_every_candidate_with_one_prefix(tokenizer):
    candidates = [NEWS[0], NEWS[1] * 6, NEWS[2]]
    prefix, suffixes, shortened = llm.fit_recommender_prompt(tokenizer, "news", "S. " * 300, NEWS * 3, candidates, 700)
    assert shortened and len(suffixes) == 3
    assert max(llm.count_tokens(tokenizer, prefix + s) for s in suffixes) + 1 <= 700


# ---- Yes/No tokens ----

def test_answer_tokens(tokenizer):
    yes_id, no_id = llm.answer_token_ids(tokenizer)
    assert tokenizer.decode([yes_id]) == "Yes" and tokenizer.decode([no_id]) == "No"
    # a leading space or newline makes a different token: the answer follows "\n" directly
    assert tokenizer(" Yes", add_special_tokens=False)["input_ids"] != [yes_id]
    prompt = prompts.render_recommender("news", "S.", NEWS[:1], NEWS[1])
    assert tokenizer(prompt + "Yes")["input_ids"] == tokenizer(prompt)["input_ids"] + [yes_id]
    prefix, suffix = llm.encode_prompt(tokenizer, prompts.render_recommender_prefix("news", "S.", NEWS[:1]),
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
        llm.answer_token_ids(bad)


# ---- train.py ----

def run_train(out, data_dir, summaries, model, *extra, nproc=1, check=True, script="train.py"):
    base = ["--data", data_dir, "--summaries", summaries, "--out", str(out), "--model", model,
            "--grad-accum", "4", "--batch-size", "1", "--lr", "1e-2", "--lora-dropout", "0", "--seed", "1"]
    cmd = ([TORCHRUN, "--standalone", "--nproc_per_node", str(nproc)] if nproc > 1 else [PYTHON]) + [script]
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


# ---- shared-prefix training ----

@pytest.mark.parametrize("loss", ["prompt", "answer"])
def test_shared_prefix_loss_and_gradients_equal_per_prompt(tokenizer, loss):
    """One user's 1 + 3 prompts: the prefix run once with every candidate on its cache (llm.user_losses) gives
    each prompt the loss that running it whole gives (llm.prompt_losses), and the same LoRA gradients."""
    from peft import LoraConfig, get_peft_model
    from tests.tiny import build_model
    # init_lora_weights=False: lora_B starts non-zero, so lora_A's gradients are not all zero either
    model = get_peft_model(build_model(tokenizer), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                              target_modules=["q_proj", "v_proj", "down_proj"],
                                                              init_lora_weights=False))
    prefix, suffixes, _ = llm.fit_recommender_prompt(tokenizer, "news", "Likes sports.", NEWS[:3], NEWS[1:5], 2048)
    head = tokenizer(prefix)["input_ids"]
    tails = [llm.encode_prompt(tokenizer, prefix, s)[1] for s in suffixes]
    assert len({len(t) for t in tails}) > 1  # candidates of different lengths: the suffix batch is padded
    yes_id, no_id = llm.answer_token_ids(tokenizer)
    answers, pad_id = [yes_id, no_id, no_id, no_id], tokenizer.pad_token_id

    def losses_and_grads(compute):
        model.zero_grad()
        per_prompt = compute()
        per_prompt.sum().backward()
        return per_prompt.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    whole, whole_grads = losses_and_grads(lambda: llm.prompt_losses(
        model, [head + t + [a] for t, a in zip(tails, answers)], pad_id, loss))
    shared, shared_grads = losses_and_grads(lambda: llm.user_losses(model, head, tails, answers, pad_id, loss))
    assert shared.tolist() == pytest.approx(whole.tolist(), rel=1e-5)
    assert len(set(whole.tolist())) == 4  # four different prompts, not one loss four times
    assert whole_grads.keys() == shared_grads.keys() and len(whole_grads) == 12
    for name, g in whole_grads.items():
        assert g.abs().sum() > 0, name
        assert torch.allclose(shared_grads[name], g, rtol=1e-4, atol=1e-7), name


@pytest.fixture(scope="module")
def per_prompt_run(setup):
    """The full run's flags with every prompt run whole."""
    root, data_dir, summaries, model = setup
    out = root / "per-prompt"
    run_train(out, data_dir, summaries, model, "--epochs", "2", "--per-prompt")
    return out


def test_shared_prefix_equals_per_prompt_in_train_py(per_prompt_run, full_run, two_run):
    """train.py's shared-prefix path (the default) takes the steps the per-prompt path takes, in one process
    and under a two-process torchrun (FSDP2): the same losses step by step and the same adapter after 8 steps."""
    reference = adapter(per_prompt_run / "epoch_2")
    for run, rel in ((full_run[0], 1e-5), (two_run, 1e-4)):
        assert losses(run) == pytest.approx(losses(per_prompt_run), rel=rel)
        a = adapter(run / "epoch_2")
        assert a.keys() == reference.keys() and all(torch.allclose(a[k], reference[k], rtol=1e-3, atol=1e-5)
                                                    for k in a)
    log = data.read_jsonl(os.path.join(per_prompt_run, "log.jsonl"))
    # the tokens logged count every prompt whole in both paths, so tokens/s compares them
    assert [r["tokens"] for r in log] == [r["tokens"] for r in data.read_jsonl(os.path.join(full_run[0], "log.jsonl"))]


COUNTING = """
import json, os, runpy, sys
import torch.distributed as dist
sys.path.insert(0, {root!r})
counts = {{"all_gather": 0, "reduce_scatter": 0}}
def counted(name, collective):
    def run(*args, **kwargs):
        counts[name] += 1
        return collective(*args, **kwargs)
    return run
dist.all_gather_single = counted("all_gather", dist.all_gather_single)  # what FSDP2 calls
dist.reduce_scatter_single = counted("reduce_scatter", dist.reduce_scatter_single)
sys.argv = ["train.py"] + sys.argv[1:]
try:
    runpy.run_path(os.path.join({root!r}, "train.py"), run_name="__main__")
finally:
    with open(os.path.join(sys.argv[sys.argv.index("--out") + 1], f"collectives-{{os.environ['RANK']}}.json"), "w") as f:
        json.dump(counts, f)
"""


def test_fsdp_gathers_each_unit_once_per_optimizer_step_whatever_the_accumulation(setup):
    """Under a two-process torchrun, each FSDP unit (2 decoder layers and the root) is all-gathered once per
    optimizer step, whatever the accumulation, where resharding gathered 8 times in every micro-step (32 per
    epoch at either accumulation). 8 users per epoch: 4 steps of 1 micro-step per process, or 2 steps of 2."""
    root, _, _, model = setup
    data_dir, summaries = make_data(root, negatives=3, name="data-k3")
    wrapper = root / "counting_train.py"
    wrapper.write_text(COUNTING.format(root=ROOT))
    for accum, steps in ((8, 4), (16, 2)):
        out = root / f"collectives-accum{accum}"
        cmd = [TORCHRUN, "--standalone", "--nproc_per_node", "2", str(wrapper), "--data", data_dir, "--summaries",
               summaries, "--out", str(out), "--model", model, "--epochs", "1", "--loss", "answer", "--grad-accum",
               str(accum), "--lr", "1e-2", "--seed", "1"]
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr[-3000:]
        assert len(losses(out)) == steps
        for rank in (0, 1):
            counts = json.load(open(out / f"collectives-{rank}.json"))
            assert counts["all_gather"] == steps * 3, counts
            assert counts["reduce_scatter"] >= steps * 2  # the LoRA gradients of both layers, every step


def test_one_to_k_answer_loss_shared_under_two_processes_equals_per_prompt(setup):
    """1 positive : 3 negatives per user, the answer-only loss: two processes sharing each user's prefix take
    the steps of one process running every prompt whole; each step holds 2 users' 8 prompts."""
    root, _, _, model = setup
    data_dir, summaries = make_data(root, negatives=3, name="data-k3")
    shared, whole = root / "k3-shared-two", root / "k3-per-prompt"
    flags = ["--epochs", "2", "--loss", "answer", "--grad-accum", "8"]
    result = run_train(shared, data_dir, summaries, model, *flags, nproc=2)
    assert "8 users -> 32 prompts, 1 positive : 3 negative(s) each" in result.stdout
    run_train(whole, data_dir, summaries, model, *flags, "--per-prompt")
    assert len(losses(whole)) == 8  # 4 steps of 2 users per epoch
    assert losses(shared) == pytest.approx(losses(whole), rel=1e-4)
    a, b = adapter(shared / "epoch_2"), adapter(whole / "epoch_2")
    assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a)
    # --negatives 1 trains on the first saved negative only: the paper's 1:1 from the same data
    one = root / "k3-first-negative"
    assert "8 users -> 16 prompts, 1 positive : 1 negative(s)" in run_train(
        one, data_dir, summaries, model, "--epochs", "1", "--negatives", "1", "--loss", "answer").stdout
    uneven = run_train(root / "k3-uneven", data_dir, summaries, model, "--epochs", "1", "--grad-accum", "6",
                       check=False)
    assert uneven.returncode != 0 and "does not hold whole users of 4 prompts" in uneven.stderr


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
    result = run_train(one, data_dir, summaries, model, "--epochs", "2", "--grad-checkpoint", "--per-prompt")
    assert "activation checkpointing" in result.stdout
    assert losses(one) == pytest.approx(losses(full_run[0]), abs=1e-5)
    two = root / "checkpointed-two"
    run_train(two, data_dir, summaries, model, "--epochs", "2", "--grad-checkpoint", "--per-prompt", nproc=2)
    assert losses(two) == pytest.approx(losses(two_run), abs=1e-5)
    # the shared prefix lives in the key/value cache, which a checkpointed layer does not keep
    refused = run_train(root / "checkpointed-shared", data_dir, summaries, model, "--grad-checkpoint", check=False)
    assert refused.returncode != 0 and "--grad-checkpoint needs --per-prompt" in refused.stderr


LORA_DTYPES = """
import json, os, runpy, sys
import torch
sys.path.insert(0, {root!r})
from peft.tuners.lora import Linear as LoraLinear
seen = set()  # the dtype of the LoRA weights each LoRA layer computes with
def record(module, args):
    if isinstance(module, LoraLinear):
        seen.add(str(module.lora_A["default"].weight.dtype))
torch.nn.modules.module.register_module_forward_pre_hook(record)
sys.argv = ["train.py"] + sys.argv[1:]
try:
    runpy.run_path(os.path.join({root!r}, "train.py"), run_name="__main__")
finally:
    with open(os.path.join(sys.argv[sys.argv.index("--out") + 1], f"lora-dtypes-{{os.environ['RANK']}}.json"), "w") as f:
        json.dump(sorted(seen), f)
"""


def test_bf16_under_two_processes_is_the_gpu_path(setup, full_run):
    """What a GPU runs, on CPU: bf16 base weights with LoRA weights in fp32 (peft keeps adapters in fp32),
    both in one FSDP2 unit that gathers them in bf16 for the forward and backward (mixed precision, so LoRA's
    saved activations are bf16), then the adapter scored by evaluate.py in bf16. Losses and scores follow fp32's
    within bf16's precision; the saved adapter is fp32."""
    root, data_dir, summaries, model = setup
    out = root / "bf16-two"
    wrapper = root / "lora_dtypes_train.py"
    wrapper.write_text(LORA_DTYPES.format(root=ROOT))
    result = run_train(out, data_dir, summaries, model, "--epochs", "2", "--dtype", "bfloat16", nproc=2,
                       script=str(wrapper))
    assert "dtype bfloat16" in result.stdout
    assert losses(out) == pytest.approx(losses(full_run[0]), rel=2e-2)
    for rank in (0, 1):
        assert json.load(open(out / f"lora-dtypes-{rank}.json")) == ["torch.bfloat16"]
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


# ---- full fine-tuning, wider LoRA, validation while training ----

def test_full_fine_tuning_trains_resumes_and_is_scored(setup, tmp_path):
    """--lora none trains every weight: the loss falls, each epoch is a model folder that from_pretrained and
    evaluate.py read, and a run stopped mid-epoch and resumed equals the uninterrupted one."""
    root, data_dir, summaries, model = setup
    flags = ["--epochs", "2", "--lora", "none", "--loss", "answer", "--lr", "1e-3", "--save-every", "3"]
    full, resumed = root / "full-ft", root / "full-ft-resumed"
    result = run_train(full, data_dir, summaries, model, *flags)
    assert "full fine-tuning: 99,648 trainable of 99,648 parameters" in result.stdout
    assert sum(losses(full)[-2:]) / 2 < losses(full)[0] - 0.5, losses(full)
    base = load_file(os.path.join(model, "model.safetensors"))
    tuned = load_file(os.path.join(full, "epoch_2", "model.safetensors"))
    assert base.keys() == tuned.keys()  # a whole model, every weight changed, not an adapter
    assert all(not torch.equal(base[k], tuned[k]) for k in base)
    run_train(resumed, data_dir, summaries, model, *flags, "--stop-after", "5")
    run_train(resumed, data_dir, summaries, model, *flags, "--resume")
    assert losses(resumed) == pytest.approx(losses(full), rel=1e-6)
    again = load_file(os.path.join(resumed, "epoch_2", "model.safetensors"))
    assert all(torch.allclose(again[k], tuned[k], rtol=1e-5, atol=1e-7) for k in tuned)
    # evaluate.py scores the full checkpoints like adapters: the training users as a test split
    scoring = str(tmp_path / "scoring")
    shutil.copytree(data_dir, scoring)
    write_jsonl(os.path.join(scoring, "test.jsonl"), data.read_jsonl(os.path.join(data_dir, "train.jsonl"))[:3])
    evaluate.main(evaluate.parser.parse_args(["--data", scoring, "--summaries", summaries, "--adapter",
                                              str(full / "epoch_2"), "--out", str(tmp_path / "eval")]))
    results = json.load(open(tmp_path / "eval" / "results.json"))
    assert results["model"] == model and results["adapter"] == str(full / "epoch_2") and results["users"] == 3
    assert results["name"] == "LLM-TRSR"


def test_lora_on_every_linear_layer(setup):
    root, data_dir, summaries, model = setup
    out = root / "all-linear"
    result = run_train(out, data_dir, summaries, model, "--epochs", "1", "--lora-targets", "all-linear")
    assert "LoRA r 8 on all-linear: 16,384 trainable" in result.stdout  # q k v o gate up down, 2 layers
    names = {k.split(".lora_")[0].rsplit(".", 1)[1] for k in adapter(out / "epoch_1")}
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_validation_while_training_is_evaluate_py_on_the_same_weights(setup, tmp_path):
    """--val-every 2 scores the val users before the first step, every 2 steps and after the last; the last
    record is what evaluate.py reports for the final adapter on val, in one process and under two."""
    root, _, _, model = setup
    data_dir, summaries = make_data(root, n_val=5, name="data-val")
    curves = {}
    for nproc in (1, 2):
        out = root / f"val-curve-{nproc}"
        result = run_train(out, data_dir, summaries, model, "--epochs", "2", "--loss", "answer", "--val-every", "3",
                           nproc=nproc)
        assert "val step 0: Recall@3" in result.stdout
        curves[nproc] = data.read_jsonl(os.path.join(out, "val.jsonl"))
        assert [r["step"] for r in curves[nproc]] == [0, 3, 6, 8] and {r["users"] for r in curves[nproc]} == {5}
    for a, b in zip(curves[1], curves[2]):
        assert a["Recall@3"] == pytest.approx(b["Recall@3"]) and a["MRR@10"] == pytest.approx(b["MRR@10"], abs=1e-6)
    evaluate.main(evaluate.parser.parse_args(["--data", data_dir, "--summaries", summaries, "--split", "val",
                                              "--adapter", str(root / "val-curve-1" / "epoch_2"),
                                              "--out", str(tmp_path / "eval")]))
    final = json.load(open(tmp_path / "eval" / "results.json"))["methods"]["LLM-TRSR"]["metrics"]
    assert curves[1][-1]["Recall@3"] == pytest.approx(final["Recall@3"][0])
    assert curves[1][-1]["MRR@10"] == pytest.approx(final["MRR@10"][0], abs=1e-6)
    assert curves[1][0] != curves[1][-1]  # the model moved


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
