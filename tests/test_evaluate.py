"""evaluate.py: metrics worked out by hand, the tie rule, the bootstrap, baselines, and scoring with a
tiny random model (shared prefix = one prompt per candidate; resume; checkpoint selection)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import data
import evaluate
import trsr
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

# ---- Scoring with a tiny random model ----


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    raw = str(root / "raw")
    data.main(["--generate", "mind", "--out", raw, "--users", "200"])
    data.main(["--dataset", "mind", "--raw", raw, "--out", str(root / "data"), "--n-train", "20", "--n-val", "4", "--n-test", "6"])
    users = [u for s in data.SPLITS for u in data.load_split(str(root / "data"), s)]
    with open(root / "summaries.jsonl", "w") as f:
        for u in users:
            f.write(json.dumps({"user": u["user"], "paradigm": "hierarchical", "summary": "This user reads sports and travel news.", "steps": []}) + "\n")
    return root, tiny_model_dir(root)


def test_shared_prefix_scores_equal_one_prompt_per_candidate(setup):
    root, model_dir = setup
    tokenizer = trsr.load_tokenizer(model_dir)
    model = trsr.load_model(model_dir, dtype="float32", device="cpu").eval()
    items = data.load_items(str(root / "data"))
    u = data.load_split(str(root / "data"), "test")[0]
    summary, history = trsr.recommender_inputs(u, items, {u["user"]: "A summary of a reader."})
    texts = [items[c] for c in [u["target"]] + u["negatives"]]
    prefix, suffixes, _ = trsr.fit_recommender_prompt(tokenizer, "news", summary, history, texts)
    yes_no = trsr.answer_token_ids(tokenizer)
    fast = trsr.score_candidates(model, tokenizer, prefix, suffixes, yes_no, prefix_cache=True)
    slow = trsr.score_candidates(model, tokenizer, prefix, suffixes, yes_no, prefix_cache=False)
    assert len(fast) == 21 and np.max(np.abs(np.array(fast) - np.array(slow))) < 1e-4
    assert np.std(fast) > 0  # the candidates' texts differ, so must the scores
    # and the same with a LoRA adapter in the way (its B matrices made non-zero so it changes the output)
    from peft import LoraConfig, get_peft_model
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).eval()
    fast_lora = trsr.score_candidates(peft_model, tokenizer, prefix, suffixes, yes_no, prefix_cache=True)
    slow_lora = trsr.score_candidates(peft_model, tokenizer, prefix, suffixes, yes_no, prefix_cache=False)
    assert np.max(np.abs(np.array(fast_lora) - np.array(slow_lora))) < 1e-4
    assert np.max(np.abs(np.array(fast_lora) - np.array(fast))) > 1e-6


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
        import torch
        torch.manual_seed(seed)
        model = trsr.load_model(model_dir, dtype="float32", device="cpu")
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
