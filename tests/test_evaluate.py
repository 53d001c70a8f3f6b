"""evaluate.py: metrics worked out by hand, the tie rule, the bootstrap, baselines, and scoring with a
tiny random model (shared prefix = one prompt per candidate; resume; checkpoint selection, LoRA and full),
and the summary probe (TF-IDF from the summary alone)."""
import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

import data
import evaluate
import generate
import llm
from tests.tiny import tiny_model_dir

N = 20  # negatives per user


def one_user(positive, negatives):
    return np.array([[positive] + list(negatives)])


def metrics(scores):
    return {k: float(v[0]) for k, v in evaluate.per_user_metrics(scores).items()}


def test_positive_on_top():
    m = metrics(one_user(0.9, [0.1] * N))
    assert m["Recall@3"] == m["MRR@3"] == m["NDCG@10"] == m["AUC"] == 1.0


def test_positive_fourth():
    m = metrics(one_user(0.5, [0.9, 0.8, 0.7] + [0.1] * (N - 3)))
    assert m["Recall@3"] == 0 and m["Recall@5"] == 1 and m["Recall@10"] == 1
    assert m["MRR@3"] == 0 and m["MRR@5"] == pytest.approx(1 / 4) and m["MRR@10"] == pytest.approx(1 / 4)
    assert m["NDCG@3"] == 0 and m["NDCG@5"] == pytest.approx(1 / np.log2(5))
    assert m["AUC"] == pytest.approx(17 / 20)


def test_all_scores_equal_never_favours_the_positive():
    # the authors' argsort with the positive first would report Recall@3 = MRR = 1 here
    m = metrics(one_user(0.5, [0.5] * N))
    assert m["Recall@3"] == pytest.approx(3 / 21) and m["Recall@5"] == pytest.approx(5 / 21)
    assert m["Recall@10"] == pytest.approx(10 / 21)
    assert m["MRR@3"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 21)
    assert m["NDCG@3"] == pytest.approx((1 + 1 / np.log2(3) + 1 / 2) / 21)
    assert m["AUC"] == 0.5


def test_a_tie_shares_the_places():
    # tied with one negative at the top: rank 1 or 2, equally likely
    m = metrics(one_user(0.9, [0.9] + [0.1] * (N - 1)))
    assert m["Recall@3"] == 1 and m["MRR@3"] == pytest.approx(0.75)
    assert m["AUC"] == pytest.approx(19.5 / 20)
    # two above, tied with two: ranks 3, 4, 5
    m = metrics(one_user(0.5, [0.9, 0.8, 0.5, 0.5] + [0.1] * (N - 4)))
    assert m["Recall@3"] == pytest.approx(1 / 3) and m["Recall@5"] == 1
    assert m["MRR@5"] == pytest.approx((1 / 3 + 1 / 4 + 1 / 5) / 3)


def test_metrics_average_over_users():
    scores = np.vstack([one_user(0.9, [0.1] * N), one_user(0.0, [0.1] * N)])
    assert evaluate.summarize_metrics(scores, 200, 0)["Recall@3"][0] == 0.5


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(1).random(100)
    mean, low, high = evaluate.bootstrap(values, 1000, seed=0)
    assert mean == pytest.approx(values.mean()) and low < mean < high
    assert (mean, low, high) == evaluate.bootstrap(values, 1000, seed=0)
    assert evaluate.bootstrap(np.full(50, 0.25), 100, 0) == (0.25, 0.25, 0.25)
    # about ±1.96 standard errors
    assert high - low == pytest.approx(2 * 1.96 * values.std() / 10, rel=0.2)


def test_paired_difference_of_a_method_with_itself_is_exactly_zero():
    scores = np.random.default_rng(0).random((30, 21))
    d = evaluate.paired(scores, scores, 200, 0)
    assert d["Recall@3"] == [0.0, 0.0, 0.0]
    better = scores.copy()
    better[:, 0] = 2.0  # the positive always on top
    d = evaluate.paired(better, scores, 200, 0)
    assert d["Recall@3"][1] > 0  # the whole interval above zero


def test_baselines_by_hand():
    train = [{"history": ["a", "a", "b"]}, {"history": ["b", "c"]}]
    users = [{"user": "u", "history": ["x"], "target": "a", "negatives": ["b", "c", "d"]}]
    assert evaluate.popularity_scores(users, train).tolist() == [[2, 2, 1, 0]]
    assert metrics(evaluate.random_scores(users))["Recall@3"] == pytest.approx(3 / 4)
    items = {"x": "red cotton bath towel", "a": "blue cotton bath towel", "b": "steel frying pan",
             "c": "crime novel paperback", "d": "red garden hose"}
    s = evaluate.tfidf_scores(users, items)[0]
    assert s[0] == max(s) and s[1] == 0 and s[2] == 0 and s[3] > 0  # shared words score, others do not


# 4 items; df: red 2, apple 2, green 1, car 1, blue 1, sky 1, and 0 for the summaries' other words.
# idf = log((1 + 4) / (1 + df)): A for df 2, B for df 1, C for df 0.
PROBE_ITEMS = {"a": "red apple", "b": "green apple", "c": "red car", "d": "blue sky"}
PROBE_USERS = [{"user": "u1", "history": ["d"], "target": "b", "negatives": ["a", "c", "d"]},
               {"user": "u2", "history": ["a"], "target": "d", "negatives": ["a", "b", "c"]}]
A, B, C = np.log(5 / 3), np.log(5 / 2), np.log(5)


def test_summary_probe_by_hand():
    summaries = {"u1": "Red apple fan.", "u2": "Fan of the sky."}
    s = evaluate.summary_tfidf_scores(PROBE_USERS, PROBE_ITEMS, summaries)
    # u1's summary (red A, apple A, fan C) against a (red A, apple A), b (green B, apple A), c (red A, car B):
    # a shares both words, b and c one each with the same weight, so b and c tie
    ab = A * A / (np.sqrt(A * A + B * B) * np.sqrt(2 * A * A + C * C))
    assert s[0] == pytest.approx([ab, np.sqrt(2) * A / np.sqrt(2 * A * A + C * C), ab, 0.0])
    assert s[0] == pytest.approx([0.14100, 0.40950, 0.14100, 0.0], abs=1e-5)
    # u2's summary (fan C, of C, the C, sky B) shares only sky, with d (blue B, sky B)
    assert s[1] == pytest.approx([B / np.sqrt(2) / np.sqrt(3 * C * C + B * B), 0, 0, 0])
    assert s[1] == pytest.approx([0.22080, 0, 0, 0], abs=1e-5)
    m = evaluate.per_user_metrics(s)
    # u1: a above, tied with c: rank 2 or 3; u2: on top
    assert m["MRR@3"] == pytest.approx([(1 / 2 + 1 / 3) / 2, 1]) and m["AUC"] == pytest.approx([(3 - 1 - 0.5) / 3, 1])
    # the history's counterpart puts u2's target last: its history (a) shares no word with d
    h = evaluate.tfidf_scores(PROBE_USERS, PROBE_ITEMS)
    one_shared = A / np.sqrt(2) / np.sqrt(A * A + B * B)  # a (unit) against b or c: apple or red, weight A
    assert h[1] == pytest.approx([0, 1, one_shared, one_shared])
    assert evaluate.per_user_metrics(h)["Recall@3"][1] == 0


def test_summary_probe_names_the_user_without_a_summary():
    with pytest.raises(ValueError, match=r"user 'u2' has no summary in runs/s.jsonl \(1 of the 2 users"):
        evaluate.summary_tfidf_scores(PROBE_USERS, PROBE_ITEMS, {"u1": "Red apple fan."}, "runs/s.jsonl")


def test_checkpoint_folders_of_either_kind(tmp_path):
    def folder(name, *files):
        os.makedirs(tmp_path / name, exist_ok=True)
        for file in files:
            (tmp_path / name / file).write_text("{}")
        return str(tmp_path / name)
    lora = folder("lora", "adapter_config.json", "adapter_model.safetensors")
    full = folder("full", "config.json", "model.safetensors")
    sharded = folder("sharded", "config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors")
    run = folder("run", "config.json")  # train.py's config beside its epochs: no weights, not a checkpoint
    folder("run/epoch_10", "config.json", "model.safetensors")
    folder("run/epoch_2", "adapter_config.json")
    assert [evaluate.checkpoint_kind(p) for p in (lora, full, sharded, run)] == ["lora", "full", "full", None]
    assert evaluate.adapters_of([run, full]) == [f"{run}/epoch_2", f"{run}/epoch_10", full]
    folder("run/epoch_11", "config.json")  # still being written: no weights yet
    with pytest.raises(FileNotFoundError, match="epoch_11: neither"):
        evaluate.adapters_of([run])
    with pytest.raises(FileNotFoundError, match="nor a train.py folder"):
        evaluate.adapters_of([folder("empty")])

# ---- Scoring with a tiny random model ----


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    raw = str(root / "raw")
    generate.main(["mind", "--out", raw, "--users", "200"])
    data.main(["--dataset", "mind", "--raw", raw, "--out", str(root / "data"), "--n-train", "20", "--n-val", "4", "--n-test", "6"])
    users = [u for s in data.SPLITS for u in data.load_split(str(root / "data"), s)]
    with open(root / "summaries.jsonl", "w") as f:
        for u in users:
            f.write(json.dumps({"user": u["user"], "paradigm": "hierarchical", "summary": "This user reads sports and travel news.", "steps": []}) + "\n")
    return root, tiny_model_dir(root)


def test_shared_prefix_scores_equal_one_prompt_per_candidate(setup):
    root, model_dir = setup
    tokenizer = llm.load_tokenizer(model_dir)
    model = llm.load_model(model_dir, dtype="float32", device="cpu").eval()
    items = data.load_items(str(root / "data"))
    u = data.load_split(str(root / "data"), "test")[0]
    summary, history = llm.recommender_inputs(u, items, {u["user"]: "A summary of a reader."})
    texts = [items[c] for c in [u["target"]] + u["negatives"]]
    prefix, suffixes, _ = llm.fit_recommender_prompt(tokenizer, "news", summary, history, texts)
    yes_no = llm.answer_token_ids(tokenizer)
    fast = llm.score_candidates(model, tokenizer, prefix, suffixes, yes_no, prefix_cache=True)
    slow = llm.score_candidates(model, tokenizer, prefix, suffixes, yes_no, prefix_cache=False)
    assert len(fast) == 21 and np.max(np.abs(np.array(fast) - np.array(slow))) < 1e-4
    assert np.std(fast) > 0  # the candidates' texts differ, so must the scores
    # and the same with a LoRA adapter in the way (its B matrices made non-zero so it changes the output)
    from peft import LoraConfig, get_peft_model
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).eval()
    fast_lora = llm.score_candidates(peft_model, tokenizer, prefix, suffixes, yes_no, prefix_cache=True)
    slow_lora = llm.score_candidates(peft_model, tokenizer, prefix, suffixes, yes_no, prefix_cache=False)
    assert np.max(np.abs(np.array(fast_lora) - np.array(slow_lora))) < 1e-4
    assert np.max(np.abs(np.array(fast_lora) - np.array(fast))) > 1e-6


def test_a_bf16_model_is_scored_from_fp32_logits_of_yes_and_no(setup):
    """A bf16 head rounds every logit to bf16; inside fp32_logits the Yes and No logits are the fp32 product of the
    model's own (bf16) last hidden state and head rows, the other logits stay bf16's, and the head is itself again
    after. An fp32 model is left alone."""
    root, model_dir = setup
    tokenizer = llm.load_tokenizer(model_dir)
    yes_no = list(llm.answer_token_ids(tokenizer))
    model = llm.load_model(model_dir, dtype="bfloat16", device="cpu").eval()
    head = model.get_output_embeddings()
    ids = torch.tensor([tokenizer("Category: sports; Title: The team wins again. Yes or No?")["input_ids"]])
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        last = out.hidden_states[-1][0]  # after the final norm, in bf16: what the head reads
        assert out.logits.dtype == torch.bfloat16
        with llm.fp32_logits(model, yes_no):
            logits = model(input_ids=ids).logits[0]
        assert logits.dtype == torch.float32
        expected = last.float() @ head.weight[yes_no].float().T
        assert torch.allclose(logits[:, yes_no], expected, rtol=0, atol=1e-5)
        assert not torch.equal(logits[:, yes_no], logits[:, yes_no].bfloat16().float())  # finer than bf16's steps
        others = [i for i in range(logits.shape[1]) if i not in yes_no]
        assert torch.equal(logits[:, others], out.logits[0][:, others].float())
        assert "forward" not in vars(head) and model(input_ids=ids).logits.dtype == torch.bfloat16
        fp32 = llm.load_model(model_dir, dtype="float32", device="cpu").eval()
        with llm.fp32_logits(fp32, yes_no):
            assert "forward" not in vars(fp32.get_output_embeddings())


def run_eval(root, model_dir, out, *extra):
    evaluate.main(evaluate.parser.parse_args(["--data", str(root / "data"), "--summaries", str(root / "summaries.jsonl"),
                                              "--model", model_dir, "--out", str(out), "--bootstrap", "100", *extra]))
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def test_evaluation_writes_scores_results_and_resumes(setup, capsys):
    root, model_dir = setup
    out = root / "zero-shot"
    r = run_eval(root, model_dir, out, "--limit", "3", "--baselines")
    assert set(r["methods"]) == {"zero-shot base model", "random", "popularity", "text similarity (TF-IDF)"}
    assert r["methods"]["random"]["metrics"]["Recall@3"] == [3 / 21] * 3
    scores = data.read_jsonl(str(out / "scores.jsonl"))
    test = data.load_split(str(root / "data"), "test")
    assert [s["user"] for s in scores] == [u["user"] for u in test[:3]]
    assert all(s["candidates"] == [u["target"]] + u["negatives"] and len(s["p"]) == 21 for s, u in zip(scores, test))
    assert "| zero-shot base model | 3 |" in open(out / "results.md").read()
    capsys.readouterr()
    # a longer run in the same folder scores only the users it has not scored yet
    r = run_eval(root, model_dir, out, "--limit", "6")
    assert "scored 3 users (63 candidates)" in capsys.readouterr().out
    again = data.read_jsonl(str(out / "scores.jsonl"))
    assert again[:3] == scores and len(again) == 6
    # another configuration in the same folder is refused rather than mixed in
    with pytest.raises(SystemExit, match="holds scores of another run"):
        run_eval(root, model_dir, out, "--limit", "6", "--recent", "1")


def test_an_interrupted_evaluation_resumes_from_its_part_file(setup, capsys):
    root, model_dir = setup
    out = root / "interrupted"
    full = run_eval(root, model_dir, root / "uninterrupted", "--limit", "4")
    lines = open(root / "uninterrupted" / "scores.jsonl").read().splitlines()
    os.makedirs(out)
    with open(out / "scoring.json", "w") as f:  # what the killed run had claimed and written
        f.write(open(root / "uninterrupted" / "scoring.json").read())
    with open(out / "scores.rank0.jsonl", "w") as f:
        f.write(lines[0] + "\n" + lines[1][:30])  # the second line cut short by the kill
    capsys.readouterr()
    resumed = run_eval(root, model_dir, out, "--limit", "4")
    assert "scored 3 users" in capsys.readouterr().out
    assert resumed["methods"]["zero-shot base model"]["metrics"] == full["methods"]["zero-shot base model"]["metrics"]


def test_checkpoint_selection_scores_every_epoch_on_val_and_reports_the_best(setup):
    root, model_dir = setup
    from peft import LoraConfig, get_peft_model
    run = root / "rec"
    for epoch, seed in ((1, 1), (2, 2)):
        torch.manual_seed(seed)
        model = llm.load_model(model_dir, dtype="float32", device="cpu")
        peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        peft_model.save_pretrained(str(run / f"epoch_{epoch}"))
    with open(run / "config.json", "w") as f:
        json.dump({"model": model_dir, "recent": 2, "no_summary": False, "tallrec": False, "max_len": 2048}, f)
    r = run_eval(root, model_dir, root / "selected", "--adapter", str(run), "--limit", "4")
    sums = {a: sum(v.values()) for a, v in r["selection"].items()}
    assert set(sums) == {str(run / "epoch_1"), str(run / "epoch_2")}
    assert r["adapter"] == max(sums, key=sums.get)
    assert r["prompt"]["recent"] == 2  # the prompt settings the adapter was trained with
    assert os.path.isfile(root / "selected" / "val" / "epoch_1" / "scores.jsonl")


def test_torchrun_two_ranks_give_the_scores_of_one_process(setup):
    root, model_dir = setup
    args = ["evaluate.py", "--data", str(root / "data"), "--summaries", str(root / "summaries.jsonl"), "--model", model_dir,
            "--bootstrap", "50", "--limit", "5"]
    cwd = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, *args, "--out", str(root / "one")], check=True, cwd=cwd, capture_output=True)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args,
                          "--out", str(root / "two")], check=True, cwd=cwd, capture_output=True, text=True)
    assert "rank 0 of 2: scored 3 users" in two.stdout  # users 0, 2, 4 by stride; rank 1 takes 1 and 3
    # the ranks' parts merge into one file in the split's order, equal to one process's
    assert open(root / "one" / "scores.jsonl").read() == open(root / "two" / "scores.jsonl").read()
    assert not [f for f in os.listdir(root / "two") if ".rank" in f]


def test_probe_summaries_add_their_rows_with_or_without_baselines(setup):
    root, model_dir = setup
    path = str(root / "summaries.jsonl")
    r = run_eval(root, model_dir, root / "probe", "--baselines-only", "--probe-summaries", f"hierarchical={path}")
    name = "summary probe: hierarchical (TF-IDF)"
    assert set(r["methods"]) == {name, "text similarity (TF-IDF)", "popularity", "random"}
    test = data.load_split(str(root / "data"), "test")
    expected = evaluate.summary_tfidf_scores(test, data.load_items(str(root / "data")), data.load_summaries(path))
    assert r["methods"][name]["metrics"] == evaluate.summarize_metrics(expected, 100, 0)
    assert f"| {name} | 6 |" in open(root / "probe" / "results.md").read()
    # next to the model, without --baselines: the model's row and the probe's
    r = run_eval(root, model_dir, root / "probe-model", "--limit", "2", "--probe-summaries", f"hierarchical={path}")
    assert set(r["methods"]) == {"zero-shot base model", name}


def test_probe_summaries_without_a_user_stop_before_scoring(setup):
    root, model_dir = setup
    test = data.load_split(str(root / "data"), "test")
    lines = open(root / "summaries.jsonl").read().splitlines()
    partial = root / "partial-summaries.jsonl"
    partial.write_text("".join(line + "\n" for line in lines if json.loads(line)["user"] != test[1]["user"]))
    with pytest.raises(ValueError, match=f"user {test[1]['user']!r} has no summary in {partial}"):
        run_eval(root, model_dir, root / "probe-partial", "--probe-summaries", f"partial={partial}")
    assert not os.path.exists(root / "probe-partial" / "scoring.json")  # no model was loaded or run
    with pytest.raises(SystemExit, match="takes NAME=PATH"):
        run_eval(root, model_dir, root / "probe-partial", "--baselines-only", "--probe-summaries", str(partial))


def test_full_checkpoints_are_scored_in_place_of_the_base_model(setup):
    """train.py --lora none: OUT/epoch_N are whole Hugging Face models; the best on val is scored on test with
    its own weights, and the tokenizer comes from the base model named in OUT/config.json."""
    import torch
    root, model_dir = setup
    run = root / "full"
    for epoch in (1, 2):
        model = llm.load_model(model_dir, dtype="float32", device="cpu")
        torch.manual_seed(epoch)
        with torch.no_grad():  # every weight moved, as full fine-tuning does
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        model.save_pretrained(str(run / f"epoch_{epoch}"))
    with open(run / "config.json", "w") as f:
        json.dump({"model": model_dir, "recent": 3, "no_summary": False, "tallrec": False, "max_len": 2048,
                   "lora": "none"}, f)
    assert not os.path.exists(run / "epoch_1" / "tokenizer.json")
    out = root / "full-eval"
    # no --model: the base model (and its tokenizer) is the one train.py's config names
    data_dir, summaries_path = str(root / "data"), str(root / "summaries.jsonl")
    evaluate.main(evaluate.parser.parse_args(["--data", data_dir, "--summaries", summaries_path,
                                              "--adapter", str(run), "--out", str(out), "--limit", "3",
                                              "--dtype", "float32", "--bootstrap", "50"]))
    r = json.load(open(out / "results.json"))
    assert set(r["selection"]) == {str(run / "epoch_1"), str(run / "epoch_2")} and r["model"] == model_dir
    sums = {a: sum(v.values()) for a, v in r["selection"].items()}
    chosen = max(sums, key=sums.get)
    assert r["adapter"] == chosen and "LLM-TRSR" in r["methods"]
    assert json.load(open(out / "scoring.json"))["adapter"] == os.path.abspath(chosen)
    # the same prompts scored directly: with the chosen checkpoint's weights, not the base model's
    tokenizer = llm.load_tokenizer(model_dir)
    yes_no = llm.answer_token_ids(tokenizer)
    checkpoint = llm.load_model(chosen, dtype="float32").eval()
    base = llm.load_model(model_dir, dtype="float32").eval()
    items, summaries = data.load_items(data_dir), data.load_summaries(summaries_path)
    scored = {s["user"]: np.array(s["p"]) for s in data.read_jsonl(str(out / "scores.jsonl"))}
    for u in data.load_split(data_dir, "test")[:3]:
        summary, history = llm.recommender_inputs(u, items, summaries, recent=3)
        texts = [items[c] for c in [u["target"]] + u["negatives"]]
        prefix, suffixes, _ = llm.fit_recommender_prompt(tokenizer, "news", summary, history, texts)
        direct = llm.score_candidates(checkpoint, tokenizer, prefix, suffixes, yes_no)
        from_base = llm.score_candidates(base, tokenizer, prefix, suffixes, yes_no)
        assert np.max(np.abs(scored[u["user"]] - direct)) < 1e-5
        assert np.max(np.abs(scored[u["user"]] - from_base)) > 1e-3


def test_full_ranking_counts_and_metrics_by_hand():
    # catalogue a..f; the user read a and b (left out of the ranking), the target c scores 5: d scores more, e the
    # same, f less. So 3 negatives, 1 above, 1 tied: rank 2 or 3, each with probability 1/2.
    items = {i: i for i in "abcdef"}
    user = {"user": "u", "history": ["a", "b", "a"], "target": "c"}
    above, tied, negatives = evaluate.full_ranks([user], items, [np.array([9.0, 9.0, 5.0, 7.0, 5.0, 1.0])])
    assert (above.tolist(), tied.tolist(), negatives.tolist()) == ([1], [1], [3])
    m = evaluate.rank_metrics(above, tied, negatives, ks=(1, 2), ranks_up_to=2)
    assert m["Recall@1"][0] == 0 and m["Recall@2"][0] == 0.5
    assert m["MRR@2"][0] == 0.25 and m["NDCG@2"][0] == pytest.approx(0.5 / np.log2(3))
    assert m["AUC"][0] == pytest.approx((3 - 1 - 0.5) / 3)
    # ranks past max(K) add nothing: cut there, the metrics @K are those of the whole list of ranks
    scores = np.random.default_rng(0).integers(0, 4, size=(50, 21)).astype(float)
    whole, cut = evaluate.per_user_metrics(scores), evaluate.rank_metrics(*evaluate.rank_bounds(scores), 20,
                                                                          ranks_up_to=10)
    assert all(np.allclose(whole[k], cut[k]) for k in whole)


def test_full_ranking_ranks_the_cheap_rankers_against_the_catalogue(setup):
    root, model_dir = setup
    r = run_eval(root, model_dir, root / "full", "--baselines-only", "--full-ranking")
    assert list(r["methods"]) == ["text similarity (TF-IDF)", "popularity", "random"] and r["ks"] == [10, 20, 50]
    items, test = data.load_items(str(root / "data")), data.load_split(str(root / "data"), "test")
    negatives = np.array([len(set(items) - set(u["history"]) - {u["target"]}) for u in test])
    # every item tied: the target's rank is uniform over the catalogue less the history, so Recall@10 = 10 / (n + 1)
    assert r["methods"]["random"]["metrics"]["Recall@10"][0] == pytest.approx(np.mean(10 / (negatives + 1)))
    counts = Counter(i for u in data.load_split(str(root / "data"), "train") for i in u["history"])
    above = [sum(counts[i] > counts[u["target"]] for i in items if i not in u["history"] and i != u["target"])
             for u in test]
    tied = [sum(counts[i] == counts[u["target"]] for i in items if i not in u["history"] and i != u["target"])
            for u in test]
    expected = evaluate.rank_metrics(np.array(above), np.array(tied), negatives, (10, 20, 50), ranks_up_to=50)
    assert r["methods"]["popularity"]["metrics"]["Recall@50"][0] == pytest.approx(expected["Recall@50"].mean())
    with pytest.raises(SystemExit, match="--full-ranking needs --baselines-only"):
        run_eval(root, model_dir, root / "full-model", "--full-ranking")
