"""data.py: the protocol, the real files' traps, and an error for each kind of bad input."""
import collections
import hashlib
import json
import os
import random
import re
import subprocess
import sys

import pytest

import data
import generate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(raw, out, *extra):
    return data.main(["--dataset", raw[0], "--raw", raw[1], "--out", str(out), *extra]) or data.load_meta(str(out))


def generated(tmp_path, dataset, users, seed=0):
    raw = str(tmp_path / f"raw-{dataset}-{seed}")
    generate.main([dataset, "--out", raw, "--users", str(users), "--seed", str(seed)])
    return dataset, raw


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """One generated sample of each dataset, big enough to profile: 3,000 MIND users, 20,000 Amazon-M2 sessions
    (of which a few percent are UK sessions with 10-25 items, as in the real file)."""
    root = tmp_path_factory.mktemp("samples")
    return {"mind": generated(root, "mind", 3000), "amazon": generated(root, "amazon", 20000)}


def files(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def test_blocks_cut_oldest_first_with_a_partial_last_block():
    assert data.blocks(list(range(12))) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]
    assert data.blocks(list(range(10))) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert data.blocks([7]) == [[7]]
    assert data.blocks([]) == []


@pytest.mark.parametrize("dataset", ["mind", "amazon"])
def test_generated_sample_builds_by_the_protocol(tmp_path, samples, dataset):
    raw = samples[dataset]
    meta = build(raw, tmp_path / "data", "--n-train", "100", "--n-val", "20", "--n-test", "20")
    splits = {s: data.load_split(str(tmp_path / "data"), s) for s in data.SPLITS}
    assert {s: len(u) for s, u in splits.items()} == {"train": 100, "val": 20, "test": 20}
    assert meta["counts"]["eligible_users"] > 140 and meta["shrunk"] is None
    users = [u["user"] for s in data.SPLITS for u in splits[s]]
    assert len(set(users)) == len(users)  # split by user: nobody is in two splits
    used = set()
    for split, records in splits.items():
        for u in records:
            assert 10 <= len(u["history"]) <= 25
            assert len(u["negatives"]) == (1 if split == "train" else 20)
            assert len(set(u["negatives"])) == len(u["negatives"])
            assert u["target"] not in u["negatives"]
            assert not set(u["history"]) & set(u["negatives"])
            used |= set(u["history"]) | {u["target"]} | set(u["negatives"])
    items = data.load_items(str(tmp_path / "data"))
    assert set(items) == used  # every item a sample names, and only those
    assert all(text.strip() for text in items.values())
    assert meta["sha256"] and all(len(h) == 64 for h in meta["sha256"].values())


def test_same_seed_gives_byte_identical_samples_and_another_seed_does_not(tmp_path):
    raw = generated(tmp_path, "mind", 300)
    again = generated(tmp_path / "again", "mind", 300)
    assert files(raw[1]) == files(again[1])  # generation is deterministic too
    amazon, amazon_again = generated(tmp_path, "amazon", 2000), generated(tmp_path / "again", "amazon", 2000)
    assert files(amazon[1]) == files(amazon_again[1])
    build(raw, tmp_path / "a", "--n-train", "50", "--n-val", "10", "--n-test", "10")
    build(raw, tmp_path / "b", "--n-train", "50", "--n-val", "10", "--n-test", "10")
    build(raw, tmp_path / "c", "--n-train", "50", "--n-val", "10", "--n-test", "10", "--seed", "1")
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert files(tmp_path / "a")["test.jsonl"] != files(tmp_path / "c")["test.jsonl"]


def test_fewer_users_than_asked_shrinks_every_split_proportionally(tmp_path, capsys):
    raw = generated(tmp_path, "mind", 200)
    meta = build(raw, tmp_path / "data")  # the paper's 10,000 / 1,000 / 1,000
    n = meta["counts"]["eligible_users"]
    assert meta["counts"]["val"] == meta["counts"]["test"] == int(1000 * n / 12000)
    assert meta["counts"]["train"] + meta["counts"]["val"] + meta["counts"]["test"] == n
    assert "shrunk proportionally" in meta["shrunk"] and "shrunk proportionally" in capsys.readouterr().out


# ---- MIND: a hand-written sample with the real files' traps ----

NEWS = [
    ["N1", "news", "newsus", '"Quoted start with no closing quote', "", "https://x/1", "[]", "[]"],
    ["N2", "sports", "football_nfl", "Zoë and José\u200b win again", "An abstract.", "https://x/2", "[]", "[]"],
] + [[f"N{i}", "travel", "travelnews", f"Story {i}", f"Abstract {i}", f"https://x/{i}", "[]", "[]"] for i in range(3, 60)]


def write_mind(folder, news=NEWS, behaviors=None):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "news.tsv"), "w", encoding="utf-8") as f:
        f.writelines("\t".join(row) + "\n" for row in news)
    with open(os.path.join(folder, "behaviors.tsv"), "w", encoding="utf-8") as f:
        f.writelines("\t".join(row) + "\n" for row in behaviors)
    return "mind", str(folder)


def mind_behaviors():
    u1 = ["N1", "N2", "N3", "N4", "N3", "N999", "N5", "N6", "N7", "N8", "N9", "N10", "N11"]  # a repeat and an unknown id
    rows = [
        ["1", "U1", "11/9/2019 9:57:55 AM", "", "N1-1 N2-0"],  # empty: the next row of U1 is the one used
        ["2", "U1", "11/9/2019 10:01:02 AM", " ".join(u1), "N2-1"],
        ["3", "U1", "11/10/2019 1:00:00 PM", "N20 N21", "N3-0"],  # not the first non-empty row: ignored
        ["4", "U2", "11/9/2019 9:00:00 AM", " ".join(f"N{i}" for i in range(3, 30)), "N2-1"],  # 27 ids: too many
        ["5", "U3", "11/9/2019 9:00:00 AM", "", "N2-1"],  # never a history
        ["6", "U4", "11/9/2019 9:00:00 AM", " ".join(f"N{i}" for i in range(30, 41)), "N2-1"],  # 11 ids: the minimum
        ["7", "U5", "11/9/2019 9:00:00 AM", " ".join(f"N{i}" for i in range(30, 40)), "N2-1"],  # 10 ids: too few
    ]
    return rows


def test_mind_rows_users_and_traps(tmp_path):
    raw = write_mind(tmp_path / "raw", behaviors=mind_behaviors())
    meta = build(raw, tmp_path / "data", "--n-train", "1", "--n-val", "1", "--n-test", "0")
    users = {u["user"]: u for s in data.SPLITS for u in data.load_split(str(tmp_path / "data"), s)}
    assert set(users) == {"U1", "U4"}
    # U1: first non-empty row; the unknown id N999 removed; the repeat of N3 kept; the last id is the target
    assert users["U1"]["history"] == ["N1", "N2", "N3", "N4", "N3", "N5", "N6", "N7", "N8", "N9", "N10"]
    assert users["U1"]["target"] == "N11"
    assert users["U4"]["history"] == [f"N{i}" for i in range(30, 40)] and users["U4"]["target"] == "N40"
    assert meta["skipped"] == {"users_without_history": 1, "users_outside_history_bounds": 2,
                               "history_ids_missing_from_catalogue": 1, "duplicate_catalogue_rows": 0}
    assert meta["counts"]["histories_with_repeated_ids"] == 1
    items = data.load_items(str(tmp_path / "data"))
    # the quote does not start a quoted field; the zero-width space is gone, the accents stay
    assert items["N1"] == 'Category: news; SubCategory: newsus; Title: "Quoted start with no closing quote'
    assert items["N2"] == "Category: sports; SubCategory: football_nfl; Title: Zoë and José win again"


def test_mind_abstract_is_optional_and_empty_abstracts_are_left_out(tmp_path):
    raw = write_mind(tmp_path / "raw", behaviors=mind_behaviors())
    build(raw, tmp_path / "data", "--n-train", "1", "--n-val", "1", "--n-test", "0", "--abstract")
    items = data.load_items(str(tmp_path / "data"))
    assert items["N1"] == 'Category: news; SubCategory: newsus; Title: "Quoted start with no closing quote'
    assert items["N2"] == "Category: sports; SubCategory: football_nfl; Title: Zoë and José win again; Abstract: An abstract."


def forty_users():
    """40 users, each with 20 distinct ids of the 59-item NEWS (19 history + the target): 39 items left to draw."""
    return [[str(k), f"U{k}", "11/9/2019 9:57:55 AM", " ".join(f"N{(k + i) % 57 + 3}" for i in range(20)), "N1-1"]
            for k in range(40)]


def test_authors_negatives_may_hit_the_history_and_ours_never_do(tmp_path):
    raw = write_mind(tmp_path / "raw", behaviors=forty_users())
    build(raw, tmp_path / "ours", "--n-train", "0", "--n-val", "0", "--n-test", "40")
    build(raw, tmp_path / "authors", "--n-train", "0", "--n-val", "0", "--n-test", "40", "--negatives", "authors")
    seen = lambda u: set(u["history"]) | {u["target"]}  # noqa: E731
    ours = data.load_split(str(tmp_path / "ours"), "test")
    authors = data.load_split(str(tmp_path / "authors"), "test")
    assert all(not seen(u) & set(u["negatives"]) for u in ours)
    # 20 of a 59-item catalogue are in each history: the authors' draws land there about a third of the time
    assert sum(len(seen(u) & set(u["negatives"])) for u in authors) > 100
    assert data.load_meta(str(tmp_path / "authors"))["protocol"]["negative_sampling"] == "authors"


def test_train_negatives_are_k_distinct_and_the_k1_negative_comes_first(tmp_path):
    raw = write_mind(tmp_path / "raw", behaviors=forty_users())
    splits = "--n-train", "20", "--n-val", "10", "--n-test", "10"
    metas = {k: build(raw, tmp_path / f"k{k}", *splits, "--train-negatives", str(k)) for k in (1, 3, 8)}
    train = {k: data.load_split(str(tmp_path / f"k{k}"), "train") for k in metas}
    for u, u3, u1 in zip(train[8], train[3], train[1]):
        assert u["user"] == u1["user"] and len(u["negatives"]) == len(set(u["negatives"])) == 8
        assert not (set(u["history"]) | {u["target"]}) & set(u["negatives"])
        assert u["negatives"][0] == u1["negatives"][0]  # the one a K=1 build saves
        assert u3["negatives"] == u["negatives"][:3]  # a larger K only adds negatives
    for split in ("val.jsonl", "test.jsonl"):  # their negatives come from a stream the extra draws do not touch
        assert files(tmp_path / "k8")[split] == files(tmp_path / "k1")[split]
    assert metas[8]["protocol"]["train_negatives"] == 8 and metas[8]["protocol"]["negatives"]["train"] == 8
    assert metas[1]["protocol"]["train_negatives"] == 1 and metas[1]["protocol"]["negatives"] == data.NEGATIVES
    # the authors' rule may hit the history, but a user's K negatives are still distinct
    build(raw, tmp_path / "authors", *splits, "--train-negatives", "30", "--negatives", "authors")
    authors = data.load_split(str(tmp_path / "authors"), "train")
    assert all(len(set(u["negatives"])) == 30 for u in authors)
    assert sum(len(set(u["history"]) & set(u["negatives"])) for u in authors) > 50


def test_train_negatives_are_seeded(tmp_path):
    raw = write_mind(tmp_path / "raw", behaviors=forty_users())
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        build(raw, tmp_path / name, "--n-train", "40", "--n-val", "0", "--n-test", "0", "--train-negatives", "5",
              "--seed", seed)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    extra = {name: {u["user"]: u["negatives"][1:] for u in data.load_split(str(tmp_path / name), "train")}
             for name in "ac"}
    assert sum(extra["a"][user] != extra["c"][user] for user in extra["a"]) > 30  # the same users, other draws


def test_popular_draws_follow_the_weights_worked_out_by_hand():
    # weights 1, 2, 3, 4 (running sums 1, 3, 6, 10): a draw is a with probability 1/10, ... d with 4/10; with d
    # excluded, a, b, c take 1/6, 2/6, 3/6. A chi-square over 6,000 seeded draws stays below the 0.1% critical value.
    ids, cumulative = data.popularity_weights(["a", "b", "c", "d", "e"], ["d c b d", "a d c c d"])
    assert ids == ["a", "b", "c", "d"] and cumulative == [1, 2, 5, 9]  # e occurs in no history: never drawn
    ids, cumulative = ["a", "b", "c", "d"], [1, 3, 6, 10]
    rng = random.Random(0)
    for exclude, expected, critical in (({"e"}, [0.1, 0.2, 0.3, 0.4], 16.27), ({"d"}, [1 / 6, 2 / 6, 3 / 6, 0], 13.82)):
        counts = collections.Counter(data.draw_popular(rng, ids, cumulative, 1, exclude)[0]
                                                   for _ in range(6000))
        assert counts["d"] == 0 if "d" in exclude else counts["d"] > 0
        chi2 = sum((counts[i] - 6000 * p) ** 2 / (6000 * p) for i, p in zip(ids, expected) if p)
        assert chi2 < critical, (counts, chi2)
    two = [data.draw_popular(rng, ids, cumulative, 2, {"a"}) for _ in range(200)]
    assert all(len(set(pair)) == 2 and "a" not in pair for pair in two)
    with pytest.raises(ValueError, match="too few to draw 4 popularity-weighted negatives"):
        data.draw_popular(rng, ids, cumulative, 4, {"a"})


def test_popular_eval_negatives_leave_training_alone_and_never_hit_the_history(tmp_path):
    raw = write_mind(tmp_path / "raw", behaviors=forty_users())
    splits = "--n-train", "20", "--n-val", "10", "--n-test", "10", "--train-negatives", "3"
    build(raw, tmp_path / "uniform", *splits)
    meta = build(raw, tmp_path / "popular", *splits, "--eval-negatives", "popular")
    build(raw, tmp_path / "again", *splits, "--eval-negatives", "popular")
    assert meta["protocol"]["eval_negatives"] == "popular"
    uniform, popular = files(tmp_path / "uniform"), files(tmp_path / "popular")
    assert popular["train.jsonl"] == uniform["train.jsonl"] and popular["val.jsonl"] != uniform["val.jsonl"]
    assert files(tmp_path / "again") == popular  # the same seed, the same files
    train = data.load_split(str(tmp_path / "popular"), "train")
    counts = collections.Counter(i for u in train for i in u["history"])
    for split in ("val", "test"):
        for u in data.load_split(str(tmp_path / "popular"), split):
            assert len(set(u["negatives"])) == 20 and not (set(u["history"]) | {u["target"]}) & set(u["negatives"])
            assert all(counts[i] for i in u["negatives"])  # only items the training histories hold


def test_the_uniform_default_builds_the_same_files_as_before_popular_negatives_existed(tmp_path):
    raw = write_mind(tmp_path / "raw", behaviors=forty_users())
    build(raw, tmp_path / "out", "--n-train", "20", "--n-val", "10", "--n-test", "10", "--train-negatives", "3")
    built = files(tmp_path / "out")
    sha = {name: hashlib.sha256(built[name]).hexdigest()[:16] for name in
           ("items.jsonl", "train.jsonl", "val.jsonl", "test.jsonl")}
    # recorded from the build of this same command before --eval-negatives was added
    assert sha == {"items.jsonl": "ee0ba721742a7da0", "train.jsonl": "178986b424256d77",
                   "val.jsonl": "1119e4173b93aa5e", "test.jsonl": "466186d0c7fa5510"}


def test_train_negatives_below_one_or_beyond_the_catalogue_is_a_clear_error(tmp_path, capsys):
    raw = write_mind(tmp_path / "raw", behaviors=forty_users())
    with pytest.raises(SystemExit):
        build(raw, tmp_path / "zero", "--train-negatives", "0")
    assert "--train-negatives must be >= 1" in capsys.readouterr().err
    build(raw, tmp_path / "all", "--n-train", "40", "--n-val", "0", "--n-test", "0", "--train-negatives", "39")
    assert all(len(set(u["negatives"])) == 39 for u in data.load_split(str(tmp_path / "all"), "train"))
    msg = error_of(raw, tmp_path, "--n-train", "40", "--n-val", "0", "--n-test", "0", "--train-negatives", "40")
    assert "--train-negatives 40: the catalogue has 59 items, 39 of them allowed as negatives" in msg

def test_authors_item_text_puts_the_id_first_and_caps_nothing(tmp_path):
    raw = write_mind(tmp_path / "raw", behaviors=mind_behaviors())
    meta = build(raw, tmp_path / "data", "--n-train", "1", "--n-val", "1", "--n-test", "0", "--item-text", "authors",
                 "--max-field-chars", "10")
    items = data.load_items(str(tmp_path / "data"))
    assert items["N1"] == 'id: N1; Category: news; SubCategory: newsus; Title: "Quoted start with no closing quote'
    assert meta["protocol"]["item_text"] == "authors" and meta["protocol"]["max_field_chars"] is None
    assert meta["protocol"]["fields"] == ["id", "Category", "SubCategory", "Title"]  # Table 1's 4 attributes


@pytest.mark.parametrize("dataset", ["mind", "amazon"])
def test_authors_item_text_on_generated_samples_has_their_names_in_their_order(tmp_path, samples, dataset):
    raw = samples[dataset]
    meta = build(raw, tmp_path / "data", "--n-train", "20", "--n-val", "5", "--n-test", "5", "--item-text", "authors")
    names = meta["protocol"]["fields"]
    assert names == (["id", "Category", "SubCategory", "Title"] if dataset == "mind" else
                     ["id", "title", "price", "brand", "color", "size", "model", "material", "author", "description"])
    seen = set()
    for item, text in data.load_items(str(tmp_path / "data")).items():
        assert text.startswith(f"id: {item}; ")
        order = [names.index(name) for name in re.findall(r"(?:^|; )(\w+): ", text) if name in names]
        assert order == sorted(order) and len(order) >= (4 if dataset == "mind" else 3)
        seen |= {names[k] for k in order}
    assert seen == set(names)  # every attribute occurs somewhere: Table 1 counts 4 and 10

# ---- Amazon-M2 ----


PRODUCTS = """id,locale,title,price,brand,color,size,model,material,author,desc
B0SHARED01,DE,Badematte rutschfest,9.99,Keplin,Navy,,,,,Eine Matte
B0SHARED01,UK,Keplin Non-Slip Bath Mat,9.99,Keplin,Navy,,,Rubber,,"Soft, quick-drying; ""machine washable""
and easy to clean."
123456789X,UK,A Crime Novel,7.5,Penguin,,,,Paperback,Agatha Christie,
"""


def write_amazon(folder, sessions, products=PRODUCTS, n_catalogue=40):
    os.makedirs(folder, exist_ok=True)
    extra = "".join(f"B0ITEM{i:04d},UK,Item {i},{i}.5,Brand,,,,,,\n" for i in range(n_catalogue))
    with open(os.path.join(folder, "products_train.csv"), "w", encoding="utf-8") as f:
        f.write(products + extra)
    with open(os.path.join(folder, "sessions_train.csv"), "w", encoding="utf-8") as f:
        f.write("prev_items,next_item,locale\n" + sessions)
    return "amazon", str(folder)


def session(ids, target, locale="UK"):
    return f'"{generate.numpy_list(ids)}",{target},{locale}\n'


def test_numpy_list_wraps_like_numpy_and_parses_back():
    ids = [f"B0ITEM{i:04d}" for i in range(11)]
    text = generate.numpy_list(ids)
    assert text.splitlines()[0] == "['B0ITEM0000' 'B0ITEM0001' 'B0ITEM0002' 'B0ITEM0003' 'B0ITEM0004'"
    assert text.splitlines()[1].startswith(" 'B0ITEM0005'") and text.endswith("'B0ITEM0010']")
    assert data.parse_id_list(text, "f", 1) == ids


def test_amazon_locale_fields_caps_and_wrapped_sessions(tmp_path):
    long_session = ["B0SHARED01", "123456789X"] + [f"B0ITEM{i:04d}" for i in range(10)] + ["B0UNKNOWN1"]
    sessions = (session(long_session, "B0ITEM0020")  # wrapped over 3 lines; one id the catalogue lacks
                + session([f"B0ITEM{i:04d}" for i in range(12)], "B0ITEM0021", locale="DE")  # other locale
                + session([f"B0ITEM{i:04d}" for i in range(9)], "B0ITEM0022")  # 9 items: too few
                + session([f"B0ITEM{i:04d}" for i in range(10)], "B0ITEM0023"))
    raw = write_amazon(tmp_path / "raw", sessions)
    meta = build(raw, tmp_path / "data", "--n-train", "2", "--n-val", "0", "--n-test", "0", "--max-field-chars", "30")
    users = {u["user"]: u for u in data.load_split(str(tmp_path / "data"), "train")}
    # a session is named by the line it starts on; the first spans lines 2-4
    assert set(users) == {"S2", "S10"}
    assert users["S2"]["history"] == long_session[:-1] and users["S2"]["target"] == "B0ITEM0020"
    assert meta["skipped"] == {"sessions_of_other_locales": 1, "sessions_with_target_missing_from_catalogue": 0,
                               "sessions_outside_history_bounds": 1, "history_ids_missing_from_catalogue": 1,
                               "duplicate_catalogue_rows": 0}
    items = data.load_items(str(tmp_path / "data"))
    # the UK row of an id listed under two locales; empty fields left out; the description on one line, capped
    assert items["B0SHARED01"] == ("Title: Keplin Non-Slip Bath Mat; Price: 9.99; Brand: Keplin; Color: Navy; "
                                   'Material: Rubber; Desc: Soft, quick-drying; "machine …')
    assert items["123456789X"] == "Title: A Crime Novel; Price: 7.5; Brand: Penguin; Material: Paperback; Author: Agatha Christie"
    # the authors' text: the id first, lowercase names, desc spelled out, no cap
    build(raw, tmp_path / "authors", "--n-train", "2", "--n-val", "0", "--n-test", "0", "--max-field-chars", "30",
          "--item-text", "authors")
    items = data.load_items(str(tmp_path / "authors"))
    assert items["B0SHARED01"] == ("id: B0SHARED01; title: Keplin Non-Slip Bath Mat; price: 9.99; brand: Keplin; "
                                   'color: Navy; material: Rubber; description: Soft, quick-drying; "machine washable" '
                                   "and easy to clean.")

# ---- Bad input: each error names the file, the line and what was expected ----


def error_of(raw, tmp_path, *extra):
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        build(raw, tmp_path / "data", *extra)
    return str(e.value)


def test_missing_file(tmp_path):
    os.makedirs(tmp_path / "raw")
    msg = error_of(("mind", str(tmp_path / "raw")), tmp_path)
    assert "news.tsv: no such file" in msg


def test_wrong_number_of_fields(tmp_path):
    news = NEWS[:1] + [["N2", "sports", "Title with a stray\ttab", "", "u", "[]", "[]", "[]"]] + NEWS[2:]
    msg = error_of(write_mind(tmp_path / "raw", news=news, behaviors=mind_behaviors()), tmp_path)
    assert "news.tsv:2: expected 8 tab-separated fields, got 9" in msg


def test_behaviors_with_too_few_fields(tmp_path):
    rows = mind_behaviors()
    rows[3] = rows[3][:4]
    msg = error_of(write_mind(tmp_path / "raw", behaviors=rows), tmp_path)
    assert "behaviors.tsv:4: expected 5 tab-separated fields, got 4" in msg


def test_undecodable_bytes(tmp_path):
    raw = write_mind(tmp_path / "raw", behaviors=mind_behaviors())
    with open(os.path.join(raw[1], "news.tsv"), "rb") as f:
        lines = f.read().split(b"\n")
    lines[2] = lines[2].replace(b"Story", b"St\xff\xfery")
    with open(os.path.join(raw[1], "news.tsv"), "wb") as f:
        f.write(b"\n".join(lines))
    msg = error_of(raw, tmp_path)
    assert "news.tsv:3: bytes that are not UTF-8 at column" in msg


def test_unparseable_list_names_its_physical_line(tmp_path):
    sessions = session([f"B0ITEM{i:04d}" for i in range(12)], "B0ITEM0020") + '"[B0ITEM0001, B0ITEM0002]",B0ITEM0003,UK\n'
    msg = error_of(write_amazon(tmp_path / "raw", sessions), tmp_path)
    # the first session spans lines 2-4, so the broken one is on line 5
    assert "sessions_train.csv:5: expected a list of ids like ['B09W9FND7K' 'B09JSPLN1M']" in msg


def test_wrong_csv_header_and_field_count(tmp_path):
    raw = write_amazon(tmp_path / "raw", "", products=PRODUCTS.replace("id,locale,", "id,", 1))
    assert "products_train.csv:1: expected the header id,locale,title" in error_of(raw, tmp_path)
    raw = write_amazon(tmp_path / "raw2", "", products=PRODUCTS + "B0SHORT001,UK,too,few\n")
    assert "products_train.csv:6: expected 11 comma-separated fields (id,locale,title" in error_of(raw, tmp_path)


def test_a_filter_that_leaves_no_users_says_so(tmp_path):
    raw = write_amazon(tmp_path / "raw", session([f"B0ITEM{i:04d}" for i in range(12)], "B0ITEM0020", locale="DE"))
    msg = error_of(raw, tmp_path)
    assert "no user passes the filter (10-25 history items, locale UK)" in msg and "sessions_of_other_locales': 1" in msg


def test_command_line_error_is_one_clear_line(tmp_path):
    proc = subprocess.run([sys.executable, "data.py", "--dataset", "amazon", "--raw", str(tmp_path), "--out", str(tmp_path / "d")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {tmp_path}/products_train.csv: no such file (Amazon-M2 needs products_train.csv and sessions_train.csv in --raw)"

# ---- --stats: Table 1 and the profile, against a sample counted by hand ----

TINY_ITEMS = {"N1": "id: N1; Category: news; SubCategory: newsus; Title: Storm hits the coast",
              "N2": "id: N2; Category: sports; SubCategory: golf; Title: Woods wins",
              "N3": "id: N3; Category: news; SubCategory: newsworld; Title: Talks; what comes next",  # '; ' in a title
              "N4": "id: N4; Category: travel; SubCategory: travelnews; Title: Delays"}
TINY_USERS = {"train": [{"user": "U1", "history": ["N1", "N2", "N1"], "target": "N1", "negatives": ["N4"]}],
              "val": [{"user": "U2", "history": ["N2", "N3"], "target": "N4", "negatives": ["N1"]}],
              "test": [{"user": "U3", "history": ["N1", "N3", "N3", "N4"], "target": "N4", "negatives": ["N2"]}]}


def write_sample(folder, fields):
    os.makedirs(folder)
    meta = {"dataset": "mind", "protocol": {"item_text": "authors", "fields": fields, "abstract": False}}
    data.write_atomic(os.path.join(folder, "meta.json"), [json.dumps(meta)])
    data.write_atomic(os.path.join(folder, "items.jsonl"),
                      [json.dumps({"id": item, "text": text}) for item, text in TINY_ITEMS.items()])
    for split, users in TINY_USERS.items():
        data.write_atomic(os.path.join(folder, f"{split}.jsonl"), [json.dumps(u) for u in users])
    return str(folder)


def test_table1_and_mind_profile_of_a_sample_counted_by_hand(tmp_path):
    folder = write_sample(tmp_path / "data", ["id", "Category", "SubCategory", "Title"])
    words = lambda texts: [len(t.split()) for t in texts]  # noqa: E731
    # 11 + 9 + 11 + 8 words over 4 items; histories of 3, 2 and 4 items
    assert data.table1(folder, words) == {"attributes": 4, "train": 1, "val": 1, "test": 1, "history": 3.0,
                                          "tokens": 9.75}
    # only the attributes that occur count: no item has an abstract
    no_abstracts = write_sample(tmp_path / "b", ["Category", "SubCategory", "Title", "Abstract"])
    assert data.table1(no_abstracts, words)["attributes"] == 3
    users = [u for split in data.SPLITS for u in TINY_USERS[split]]
    profile = data.mind_profile(users, TINY_ITEMS)
    # clicks N1 3, N3 3, N2 2, N4 1 (9 in all): the top 10% (and 1%) of 4 items is one item, N1 by the id tie rule
    assert profile["top10_share"] == profile["top1_share"] == pytest.approx(3 / 9)
    assert profile["once"] == pytest.approx(1 / 4)  # N4
    assert profile["targets_top10"] == pytest.approx(1 / 3)  # U1's target N1
    assert profile["favourite_share"] == pytest.approx((2 / 3 + 1 / 2 + 3 / 4) / 3)
    assert profile["categories"] == 2
    assert profile["target_category_seen"] == pytest.approx(2 / 3)  # U2's travel target is new to it
    assert profile["words"] == pytest.approx((9 + 7 + 9 + 6) / 4)  # "Category: news; SubCategory: newsus; Title: …"
    assert profile["title_words"] == pytest.approx((4 + 2 + 4 + 1) / 4)
    assert profile["history"] == 3


def test_session_profile_of_raw_sessions_counted_by_hand(tmp_path):
    a, b, c, d, e, f, g, h = (f"B0ITEM{i:04d}" for i in range(8))
    i = "123456789X"
    sessions = [[a], [a, b], [a, b, a, c, d, e, f, g, h, a], [b, b, i]]
    locales = ["UK", "DE", "UK", "JP"]
    raw = write_amazon(tmp_path / "raw", "".join(session(s, a, locale) for s, locale in zip(sessions, locales)))
    profile = data.session_profile(data.raw_sessions(raw[1]))  # every locale; the 10-item list wraps over lines
    assert profile["length"] == 4 and profile["kept_share"] == 1 / 4 and profile["kept_length"] == 10
    # occurrences: a 5, b 4, c, d, e, f, g, h, i once each (16 in all, 9 items): the top 10% is a
    assert profile["top10_share"] == pytest.approx(5 / 16) and profile["once"] == pytest.approx(7 / 9)
    assert profile["repeats"] == pytest.approx((0 + 0 + 0.2 + 1 / 3) / 4)
    assert profile["kept_repeats"] == pytest.approx(0.2)


def test_stats_command_prints_table1_and_the_profile_beside_the_paper(tmp_path, capsys):
    from tests.tiny import build_tokenizer
    build_tokenizer().save_pretrained(str(tmp_path / "tokenizer"))
    a, b = "B0ITEM0000", "B0ITEM0001"
    raw = write_amazon(tmp_path / "raw", session([a] * 4 + [b] * 8, b) + session([a, b], a))
    data.main(["--stats", write_sample(tmp_path / "data", ["id", "Category", "SubCategory", "Title"]),
               "--tokenizer", str(tmp_path / "tokenizer"), "--raw", raw[1]])
    out = capsys.readouterr().out
    assert "| # of different attributes | 4 | 4 |" in out
    assert "| # of positive samples in the training set | 1 | 10,000 |" in out
    assert "| Avg. # of historical user behavior sequence | 3.00 | 16.23 |" in out
    assert f"| Avg. # of tokens corresponding to an item ({tmp_path}/tokenizer's tokenizer) |" in out
    assert "| distinct categories per user | 2.00 | 6.70 |" in out
    assert "| sessions with 10-25 items | 0.500 | 0.033 |" in out and "| mean length of those | 12.00 | 12.56 |" in out


# ---- The generated samples behave like real rows ----


def off_by_more_than(measured, real, tolerance=0.2):
    """The statistics more than `tolerance` (relative) away from the real value: {key: measured / real}."""
    ratios = {key: measured[key] / value for key, _, value in real}
    return {key: round(r, 2) for key, r in ratios.items() if not 1 - tolerance <= r <= 1 + tolerance}


def test_generated_samples_profile_like_real_rows(tmp_path, samples):
    build(samples["mind"], tmp_path / "mind")
    users = [u for split in data.SPLITS for u in data.load_split(str(tmp_path / "mind"), split)]
    items = data.load_items(str(tmp_path / "mind"))
    assert off_by_more_than(data.mind_profile(users, items), data.REAL_MIND) == {}
    # still predictable: a target's category is in the history clearly more often than a negative's
    category = {item: re.search(r"Category: (\w+)", text).group(1) for item, text in items.items()}
    read = [{category[item] for item in u["history"]} for u in users]
    targets = data.mean(category[u["target"]] in c for u, c in zip(users, read))
    negatives = data.mean(category[x] in c for u, c in zip(users, read) for x in u["negatives"])
    assert targets > negatives + 0.1

    sessions = data.session_profile(data.raw_sessions(samples["amazon"][1]))
    assert off_by_more_than(sessions, data.REAL_AMAZON_SESSIONS) == {}
    build(samples["amazon"], tmp_path / "amazon")
    users = [u for split in data.SPLITS for u in data.load_split(str(tmp_path / "amazon"), split)]
    sample = {"history": data.mean(len(u["history"]) for u in users),
              "repeats": data.mean(data.repeats(u["history"]) for u in users)}
    assert off_by_more_than(sample, data.REAL_AMAZON_SAMPLE) == {}


def test_progress_in_a_log_file_is_plain_lines(tmp_path):
    raw = write_mind(tmp_path / "raw", behaviors=mind_behaviors())
    command = ["data.py", "--dataset", "mind", "--raw", raw[1], "--out", str(tmp_path / "d"), "--n-train", "1", "--n-val", "1"]
    proc = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and "\r" not in proc.stderr  # no carriage return when stderr is not a terminal
    assert "news.tsv: 59 lines in" in proc.stderr
