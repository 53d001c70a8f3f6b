"""Raw MIND / Amazon-M2 files -> the paper's samples: per user a history, a target and saved negatives.

Build samples from the real files, or from a sample in their exact file format that generate.py writes
(the same code reads both):

$ python generate.py mind --out raw/mind --users 1000 --seed 0
$ python data.py --dataset mind --raw raw/mind --out data/mind --seed 0
$ python generate.py amazon --out raw/amazon --users 80000   # sessions, all locales: ~1,000 UK users
$ python data.py --dataset amazon --raw raw/amazon --out data/amazon --locale UK [--item-text authors]
$ python data.py --stats data/mind [--tokenizer meta-llama/Llama-2-7b-hf]   # Table 1's rows and a profile
$ python data.py --stats data/amazon --raw raw/amazon                       # ... and the raw sessions' profile

The protocol (paper §5.1, and what the authors' code did, see docs/differences.md):
- MIND: per user the first behaviors row with a non-empty History; users whose History has 11–26 ids;
  the last id is the target, the 10–25 before it the history. Amazon-M2: sessions of one locale with
  10–25 prev_items; next_item is the target.
- Users are shuffled with the seed and split by user into train / val / test (paper: 10,000 / 1,000 /
  1,000, shrunk proportionally when there are fewer users).
- Negatives: 1 per training user (`--train-negatives K` for K), 20 per validation/test user, drawn with the
  seed from the catalogue, never the target or an item of the user's history (`--negatives authors` drops
  that exclusion, as the authors' code did). They are saved, so every stage and baseline ranks exactly the
  same candidates.
- Ids that the catalogue lacks (news.tsv / products of the locale) have no text: they are removed from
  the history before the length bounds are applied, and counted in meta.json.
- Item text: `--item-text figures` (default) as the paper's Figures 6-8 show it, each field capped;
  `--item-text authors` as the authors' code wrote it, the item id first and nothing capped.

Output in --out: items.jsonl ({"id", "text"} for every item a sample uses), train.jsonl, val.jsonl,
test.jsonl ({"user", "history": [ids, oldest first], "target", "negatives": [ids]}) and meta.json.
This module also holds the readers of those files, which the other stages import; it needs no torch
(only --stats does, to count tokens with a model's tokenizer).
"""
import argparse
import bisect
import collections
import csv
import hashlib
import json
import os
import random
import re
import sys
import time

import common
import prompts

BLOCK_SIZE = 5  # items per block (paper §5.2.2)
SPLITS = ("train", "val", "test")
PAPER_SPLIT = {"train": 10_000, "val": 1_000, "test": 1_000}  # users per split (paper Table 1)
NEGATIVES = {"train": 1, "val": 20, "test": 20}  # 1:1 for training, 1:20 for ranking (paper §5.1)
MIN_HISTORY, MAX_HISTORY = 10, 25  # items before the target (paper §5.1)

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--dataset", choices=["mind", "amazon"], help="build samples from the raw files in --raw")
parser.add_argument("--raw", help="folder with news.tsv + behaviors.tsv (MIND) "
                                  "or products_train.csv + sessions_train.csv (Amazon-M2)")
parser.add_argument("--out", help="output folder")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--n-train", type=int, default=PAPER_SPLIT["train"])
parser.add_argument("--n-val", type=int, default=PAPER_SPLIT["val"])
parser.add_argument("--n-test", type=int, default=PAPER_SPLIT["test"])
parser.add_argument("--locale", default="UK", help="Amazon-M2 locale (DE, JP, UK, ES, FR, IT)")
parser.add_argument("--negatives", choices=["exclude", "authors"], default="exclude",
                    help="exclude: never the target or a history item; "
                         "authors: any catalogue item, as the authors' code drew them")
parser.add_argument("--eval-negatives", choices=["uniform", "popular"], default="uniform",
                    help="how the val/test users' 20 negatives are drawn: uniform over the catalogue (the paper's), or "
                         "popular, each item with probability proportional to its occurrences in the training users' "
                         "histories (RecBole's 'pop' sampling), which popularity alone cannot win")
parser.add_argument("--train-negatives", type=int, default=NEGATIVES["train"], metavar="K",
                    help="distinct negatives saved per training user (default 1, the paper's 1:1); the first is the "
                         "one a K=1 build saves, and the val/test negatives do not depend on K")
parser.add_argument("--abstract", action="store_true",
                    help="MIND: add the abstract to the item text (off in the authors' code)")
parser.add_argument("--max-field-chars", type=int, default=256,
                    help="with --item-text figures: cap on each field, in characters")
parser.add_argument("--item-text", choices=["figures", "authors"], default="figures",
                    help="figures: 'Category: …; SubCategory: …; Title: …' as the paper's Figures 6-8 show it, "
                         "fields capped; authors: the authors' code's text, the item id first, no cap "
                         "(Table 1's 4 and 10 attributes)")
parser.add_argument("--stats", nargs="?", const="", metavar="DATA",
                    help="print Table 1's rows and the profile of a built sample beside the real values; "
                         "with --raw, also the session profile of Amazon-M2's raw sessions_train.csv")
parser.add_argument("--tokenizer", help="with --stats: count an item's tokens with this model's tokenizer "
                                        "(default: trsr's default model, SmolLM2-135M-Instruct; "
                                        "the paper counted with Llama-2's)")

# ----------------------------------------------------------------------------------------------------
# Reading raw files: line by line, every error names the file and the line


def open_lines(path, sha, what):
    """Decoded lines of a UTF-8 file, hashing the bytes as they are read, so each file is read once. The MiB
    read show as progress on stderr (common.progress), then a line with the number of lines read."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (expected the dataset's raw file here)")
    t0, lineno = time.time(), 0
    progress = common.progress(os.path.getsize(path) / 2**20, what, "MiB")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            sha.update(raw)
            progress.update(len(raw) / 2**20)
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: bytes that are not UTF-8 at column {e.start + 1} "
                                 f"({raw[e.start:e.start + 4]!r}); the raw files are UTF-8") from None
    progress.close()
    print(f"{what}: {lineno:,} lines in {time.time() - t0:.1f} s", file=sys.stderr)


def read_tsv(path, n_fields, sha, what):
    """Rows of a tab-separated file with no header, read with quoting off.

    MIND titles can start with a double quote: a CSV reader with default quoting would merge or shift
    fields there. No MIND field contains a tab, so a plain split is the correct reader."""
    for lineno, line in open_lines(path, sha, what):
        line = line.rstrip("\r\n")
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != n_fields:
            raise ValueError(f"{path}:{lineno}: expected {n_fields} tab-separated fields, "
                             f"got {len(fields)}: {line[:80]!r}")
        yield lineno, fields


def read_csv(path, header, sha, what):
    """Rows of a comma-separated file with a header, quoting on (a quoted field may span lines)."""
    lines = open_lines(path, sha, what)
    state = {"lineno": 0}

    def text():  # csv needs bare strings; keep the physical line number for error messages
        for lineno, line in lines:
            state["lineno"] = lineno
            yield line

    reader = csv.reader(text())
    try:
        first = next(reader, None)
        if first is None or [h.lstrip("\ufeff") for h in first] != header:
            raise ValueError(f"{path}:1: expected the header {','.join(header)}, got {','.join(first or [])!r}")
        start = state["lineno"] + 1
        for fields in reader:
            if len(fields) != len(header):
                raise ValueError(f"{path}:{start}: expected {len(header)} comma-separated fields "
                                 f"({','.join(header)}), got {len(fields)}")
            yield start, fields
            start = state["lineno"] + 1
    except csv.Error as e:
        raise ValueError(f"{path}:{state['lineno']}: malformed CSV ({e})") from None


LIST_RE = re.compile(r"\[\s*(?:'[^'\s]*'\s*)*\]")
ITEM_RE = re.compile(r"'([^'\s]*)'")


def parse_id_list(text, path, lineno):
    """Amazon-M2's numpy-style list repr, "['B09W9FND7K' 'B09JSPLN1M']", possibly wrapped over lines."""
    if not LIST_RE.fullmatch(text.strip()):
        raise ValueError(f"{path}:{lineno}: expected a list of ids like ['B09W9FND7K' 'B09JSPLN1M'], got {text[:80]!r}")
    return ITEM_RE.findall(text)

# ----------------------------------------------------------------------------------------------------
# Item text


def clean(text, cap=None):
    """One line of text: zero-width characters removed, whitespace collapsed, capped at `cap` characters."""
    text = " ".join(text.replace("\u200b", "").replace("\ufeff", "").split())
    if cap is not None and len(text) > cap:  # cut at a word boundary and say so with an ellipsis
        text = text[:cap].rsplit(" ", 1)[0] + " …"
    return text


# Two looks of the same item. `figures`: the paper's Figures 6-8, each field capped so one long description
# cannot crowd the rest out of a prompt. `authors`: what the authors' released code gave the models, the item
# id first and nothing capped; Table 1's "# of different attributes" (4 for MIND, 10 for Amazon-M2) counts
# these fields, the id among them. Whitespace is collapsed in both: a line break inside a description
# would read as a new prompt section.
AMAZON_FIELDS = ["title", "price", "brand", "color", "size", "model", "material", "author", "desc"]


def field_names(dataset, item_text, abstract=False):
    """The field names an item text can carry, in their order (Table 1 counts the ones that occur)."""
    if dataset == "mind":
        names = ["Category", "SubCategory", "Title"] + (["Abstract"] if abstract else [])
    elif item_text == "figures":
        names = [name.capitalize() for name in AMAZON_FIELDS]
    else:  # the product header's lowercase names, desc spelled out as the authors did
        names = AMAZON_FIELDS[:-1] + ["description"]
    return (["id"] if item_text == "authors" else []) + names


def mind_text(nid, category, subcategory, title, abstract, item_text, cap):
    """abstract is None when it is left out (as the authors did); an empty one is left out too."""
    fields = [("id", nid)] if item_text == "authors" else []
    fields += [("Category", category), ("SubCategory", subcategory), ("Title", title)]
    if abstract is not None and clean(abstract):
        fields.append(("Abstract", abstract))
    return "; ".join(f"{name}: {clean(value, cap)}" for name, value in fields)


def amazon_text(row, item_text, cap):
    """The non-empty fields among AMAZON_FIELDS as 'name: value' joined by '; '."""
    names = field_names("amazon", item_text)
    values = ([row["id"]] if item_text == "authors" else []) + [row[name] for name in AMAZON_FIELDS]
    parts = []
    for name, value in zip(names, values):
        value = clean(value, cap)
        if value and value.lower() != "nan":  # "nan": pandas' missing value, in a file re-saved from a DataFrame
            parts.append(f"{name}: {value}")
    return "; ".join(parts)

# ----------------------------------------------------------------------------------------------------
# Building samples


MIND_NEWS_FIELDS = 8  # NewsID, Category, SubCategory, Title, Abstract, URL, TitleEntities, AbstractEntities
MIND_BEHAVIOR_FIELDS = 5  # ImpressionID, UserID, Time, History, Impressions
AMAZON_PRODUCT_HEADER = ["id", "locale"] + AMAZON_FIELDS
AMAZON_SESSION_HEADER = ["prev_items", "next_item", "locale"]


def field_cap(args):
    return args.max_field_chars if args.item_text == "figures" else None  # the authors capped nothing


def keep_known(ids, catalogue, skipped):
    """The ids that have text; the others are counted, never silently lost."""
    known = [i for i in ids if i in catalogue]
    skipped["history_ids_missing_from_catalogue"] += len(ids) - len(known)
    return known


def read_mind(raw, args, sha, skipped):
    news_path, behaviors_path = os.path.join(raw, "news.tsv"), os.path.join(raw, "behaviors.tsv")
    for p in (news_path, behaviors_path):  # fail before a long read of the other file
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p}: no such file (MIND needs news.tsv and behaviors.tsv in --raw)")
    catalogue = {}
    news = read_tsv(news_path, MIND_NEWS_FIELDS, sha["news.tsv"], "news.tsv")
    for _, (nid, category, subcategory, title, abstract, *_) in news:
        if nid in catalogue:
            skipped["duplicate_catalogue_rows"] += 1
            continue
        catalogue[nid] = mind_text(nid, category, subcategory, title, abstract if args.abstract else None,
                                   args.item_text, field_cap(args))
    seen, empty, eligible = set(), set(), []
    behaviors = read_tsv(behaviors_path, MIND_BEHAVIOR_FIELDS, sha["behaviors.tsv"], "behaviors.tsv")
    for _, (_, user, _, history, _) in behaviors:
        if user in seen:
            continue
        if not history.strip():  # only the first row with a non-empty History counts: an empty one marks no user
            empty.add(user)
            continue
        seen.add(user)
        ids = keep_known(history.split(), catalogue, skipped)
        if not MIN_HISTORY + 1 <= len(ids) <= MAX_HISTORY + 1:
            skipped["users_outside_history_bounds"] += 1
            continue
        eligible.append((user, " ".join(ids[:-1]), ids[-1]))  # one string, not a list: far less memory per user
    skipped["users_without_history"] = len(empty - seen)
    return catalogue, eligible


def read_amazon(raw, args, sha, skipped):
    products_path, sessions_path = os.path.join(raw, "products_train.csv"), os.path.join(raw, "sessions_train.csv")
    for p in (products_path, sessions_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p}: no such file "
                                    "(Amazon-M2 needs products_train.csv and sessions_train.csv in --raw)")
    catalogue = {}  # products of the chosen locale only: the same id appears under several locales
    products = read_csv(products_path, AMAZON_PRODUCT_HEADER, sha["products_train.csv"], "products_train.csv")
    for _, fields in products:
        row = dict(zip(AMAZON_PRODUCT_HEADER, fields))
        if row["locale"] != args.locale:
            continue
        if row["id"] in catalogue:
            skipped["duplicate_catalogue_rows"] += 1
            continue
        catalogue[row["id"]] = amazon_text(row, args.item_text, field_cap(args))
    if not catalogue:
        raise ValueError(f"{products_path}: no products with locale {args.locale!r}")
    eligible = []
    sessions = read_csv(sessions_path, AMAZON_SESSION_HEADER, sha["sessions_train.csv"], "sessions_train.csv")
    for lineno, (prev_items, next_item, locale) in sessions:
        ids = parse_id_list(prev_items, sessions_path, lineno)  # parse every row, so a broken file is caught
        if locale != args.locale:
            skipped["sessions_of_other_locales"] += 1
            continue
        if next_item not in catalogue:
            skipped["sessions_with_target_missing_from_catalogue"] += 1
            continue
        ids = keep_known(ids, catalogue, skipped)
        if not MIN_HISTORY <= len(ids) <= MAX_HISTORY:
            skipped["sessions_outside_history_bounds"] += 1
            continue
        # sessions have no user id: the session's line number names it, stable across builds
        eligible.append((f"S{lineno}", " ".join(ids), next_item))
    return catalogue, eligible


def read_raw(args):
    """(catalogue {id: text}, eligible users [(user, history joined by spaces, target)] in file order,
    skipped {reason: count}, sha {file name: hash of its bytes}) of the raw files in args.raw."""
    names = ["news.tsv", "behaviors.tsv"] if args.dataset == "mind" else ["products_train.csv", "sessions_train.csv"]
    sha = {name: hashlib.sha256() for name in names}
    if args.dataset == "mind":
        skipped = dict.fromkeys(["users_without_history", "users_outside_history_bounds"], 0)
    else:
        skipped = dict.fromkeys(["sessions_of_other_locales", "sessions_with_target_missing_from_catalogue",
                                 "sessions_outside_history_bounds"], 0)
    skipped.update(history_ids_missing_from_catalogue=0, duplicate_catalogue_rows=0)
    reader = read_mind if args.dataset == "mind" else read_amazon
    catalogue, eligible = reader(args.raw, args, sha, skipped)
    return catalogue, eligible, skipped, sha


def split_sizes(n_eligible, requested):
    """Users per split; when fewer users pass the filter than asked for, shrink every split by the same factor."""
    total = sum(requested.values())
    if n_eligible >= total:
        return dict(requested), None
    scale = n_eligible / total
    sizes = {s: int(requested[s] * scale) for s in ("val", "test")}
    sizes["train"] = n_eligible - sizes["val"] - sizes["test"]
    note = (f"only {n_eligible:,} users pass the filter, fewer than the {total:,} asked for: "
            f"splits shrunk proportionally to {sizes['train']:,} / {sizes['val']:,} / {sizes['test']:,}")
    return sizes, note


def draw_negatives(rng, catalogue_ids, n, exclude):
    """n distinct catalogue items not in `exclude`, by rejection (the catalogue dwarfs a history)."""
    if len(catalogue_ids) - len(exclude) < n:
        raise ValueError(f"the catalogue has {len(catalogue_ids)} items: too few to draw {n} negatives")
    chosen = []
    while len(chosen) < n:
        item = catalogue_ids[rng.randrange(len(catalogue_ids))]
        if item not in exclude and item not in chosen:
            chosen.append(item)
    return chosen


def draw_popular(rng, ids, cumulative, n, exclude):
    """n distinct items of `ids` not in `exclude`, each drawn with probability proportional to its weight
    (cumulative: the running sums of the weights, in the order of ids), by rejection."""
    if len(ids) - len(exclude) < n and len(ids) - len(exclude.intersection(ids)) < n:  # the first test is quick
        raise ValueError(f"only {len(ids)} items occur in the training users' histories: too few to draw {n} "
                         f"popularity-weighted negatives that are not the target or in the history")
    chosen = []
    while len(chosen) < n:
        item = ids[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]
        if item not in exclude and item not in chosen:
            chosen.append(item)
    return chosen


def popularity_weights(catalogue_ids, train_histories):
    """(ids, cumulative weights) of the catalogue items the training users' histories hold, in catalogue order,
    weighted by how often they occur there (an item no training history holds is never drawn)."""
    counts = collections.Counter(i for history in train_histories for i in history.split())
    ids = [i for i in catalogue_ids if counts[i]]
    cumulative, total = [], 0
    for i in ids:
        total += counts[i]
        cumulative.append(total)
    return ids, cumulative


def assign_splits(eligible, catalogue, args):
    """{split: [{"user", "history", "target", "negatives"}]} and the note on shrunk splits (None if not shrunk).

    The users are shuffled with the seed, then cut into the splits; the order of users within a split is this
    order. Shuffles eligible in place. The training users' negatives are drawn first, from the same stream
    whatever --eval-negatives says, so they are the same under either protocol."""
    rng = random.Random(args.seed)
    rng.shuffle(eligible)
    sizes, note = split_sizes(len(eligible), {"train": args.n_train, "val": args.n_val, "test": args.n_test})
    if note:
        print(note)
    catalogue_ids = list(catalogue)  # file order, so the draws depend on the seed and the files alone
    if args.eval_negatives == "popular":
        popular = popularity_weights(catalogue_ids, [history for _, history, _ in eligible[:sizes["train"]]])
    k = args.train_negatives
    splits, start = {}, 0
    for split in SPLITS:
        users = [{"user": user, "history": history.split(), "target": target}
                 for user, history, target in eligible[start:start + sizes[split]]]
        start += sizes[split]
        for u in users:
            exclude = set(u["history"]) | {u["target"]} if args.negatives == "exclude" else set()
            if split == "train" and len(catalogue_ids) - len(exclude) < k:
                raise ValueError(f"--train-negatives {k}: the catalogue has {len(catalogue_ids)} items, "
                                 f"{len(catalogue_ids) - len(exclude)} of them allowed as negatives of user "
                                 f"{u['user']}: too few for {k} distinct negatives")
            if split != "train" and args.eval_negatives == "popular":
                u["negatives"] = draw_popular(rng, *popular, NEGATIVES[split], exclude)
            else:
                u["negatives"] = draw_negatives(rng, catalogue_ids, NEGATIVES[split], exclude)
            if split == "train" and k > 1:
                # The other K-1 come from a generator of the user's own, so the shared stream, and with it the
                # first training negative and every val/test negative, is the K=1 build's; and a user's K
                # negatives are the first K of any larger K's.
                own = random.Random(f"{args.seed}:train-negatives:{u['user']}")
                u["negatives"] += draw_negatives(own, catalogue_ids, k - 1, exclude | set(u["negatives"]))
        splits[split] = users
    return splits, note


def used_items(splits):
    """Every item a sample names, in first-use order."""
    used, seen = [], set()
    for split in SPLITS:
        for u in splits[split]:
            for item in u["history"] + [u["target"]] + u["negatives"]:
                if item not in seen:
                    seen.add(item)
                    used.append(item)
    return used


def write_atomic(path, lines):
    """Write to a temporary file and rename, so an interrupted build never leaves a half-written file."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")
    os.replace(tmp, path)


def write_samples(out, catalogue, splits, used):
    """items.jsonl with the text of every used item, and one JSON-lines file per split."""
    write_atomic(os.path.join(out, "items.jsonl"),
                 (json.dumps({"id": i, "text": catalogue[i]}, ensure_ascii=False) for i in used))
    for split in SPLITS:
        write_atomic(os.path.join(out, f"{split}.jsonl"),
                     (json.dumps({"user": u["user"], "history": u["history"], "target": u["target"],
                                  "negatives": u["negatives"]}, ensure_ascii=False) for u in splits[split]))


def sample_meta(args, splits, n_eligible, n_catalogue, n_used, note, skipped, sha):
    """meta.json's record of a build: the options, the protocol, the counts and the raw files' hashes."""
    histories = [u["history"] for s in SPLITS for u in splits[s]]
    return {
        "dataset": args.dataset,
        "raw": args.raw,
        "locale": args.locale if args.dataset == "amazon" else None,
        "seed": args.seed,
        "protocol": {"history_items": [MIN_HISTORY, MAX_HISTORY], "block_size": BLOCK_SIZE,
                     "negatives": {**NEGATIVES, "train": args.train_negatives}, "train_negatives": args.train_negatives,
                     "negative_sampling": args.negatives, "eval_negatives": args.eval_negatives,
                     "abstract": args.abstract if args.dataset == "mind" else None,
                     "item_text": args.item_text, "fields": field_names(args.dataset, args.item_text, args.abstract),
                     "max_field_chars": field_cap(args),
                     "missing_ids": "ids absent from the catalogue are removed from the history "
                                    "before the length bounds apply"},
        "requested": {"train": args.n_train, "val": args.n_val, "test": args.n_test},
        "counts": {**{s: len(splits[s]) for s in SPLITS}, "eligible_users": n_eligible, "catalogue": n_catalogue,
                   "items": n_used, "mean_history": round(sum(map(len, histories)) / len(histories), 2),
                   "histories_with_repeated_ids": sum(len(set(h)) < len(h) for h in histories)},
        "shrunk": note,
        "skipped": skipped,
        "sha256": {name: h.hexdigest() for name, h in sha.items()},
    }


def build(args):
    """Samples from the raw files in args.raw, written to args.out; returns meta.json's record."""
    t0 = time.time()
    catalogue, eligible, skipped, sha = read_raw(args)
    bounds = f"{MIN_HISTORY}-{MAX_HISTORY} history items"
    if not eligible:
        raise ValueError(f"{args.raw}: no user passes the filter ({bounds}"
                         f"{', locale ' + args.locale if args.dataset == 'amazon' else ''}); skipped: {skipped}")
    splits, note = assign_splits(eligible, catalogue, args)
    os.makedirs(args.out, exist_ok=True)
    used = used_items(splits)
    write_samples(args.out, catalogue, splits, used)
    meta = sample_meta(args, splits, len(eligible), len(catalogue), len(used), note, skipped, sha)
    write_atomic(os.path.join(args.out, "meta.json"), [json.dumps(meta, indent=1, ensure_ascii=False)])
    print(f"built {args.dataset} from {args.raw} into {args.out} in {time.time() - t0:.1f} s: "
          f"{len(eligible):,} users pass the filter of {bounds}; train/val/test "
          f"{len(splits['train']):,}/{len(splits['val']):,}/{len(splits['test']):,}; {len(used):,} items; "
          f"mean history {meta['counts']['mean_history']}")
    print(f"skipped: {json.dumps(skipped)}")
    return meta

# ----------------------------------------------------------------------------------------------------
# Readers of the built samples (used by every later stage)


def blocks(history, size=BLOCK_SIZE):
    """Cut a history into blocks of `size` items, oldest first; the last block may be partial."""
    return [history[i:i + size] for i in range(0, len(history), size)]


def read_jsonl(path):
    """Records of a JSON-lines file; a line that does not parse stops with the file and line number."""
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: expected one JSON object per line ({e})") from None
    return records


def load_items(data_dir):
    """{item id: item text} from DATA/items.jsonl."""
    return {r["id"]: r["text"] for r in read_jsonl(os.path.join(data_dir, "items.jsonl"))}


def load_split(data_dir, split):
    """Users of one split: [{"user", "history": [ids, oldest first], "target", "negatives": [ids]}]."""
    assert split in SPLITS, f"split must be one of {SPLITS}, got {split!r}"
    return read_jsonl(os.path.join(data_dir, f"{split}.jsonl"))


def load_meta(data_dir):
    with open(os.path.join(data_dir, "meta.json"), encoding="utf-8") as f:
        return json.load(f)


def load_domain(data_dir):
    """The prompt domain of a built sample ("news", "shopping"), from meta.json's "dataset"."""
    meta = load_meta(data_dir)
    if meta.get("dataset") not in prompts.DOMAINS:
        raise ValueError(f"{os.path.join(data_dir, 'meta.json')}: 'dataset' must be one of "
                         f"{sorted(prompts.DOMAINS)}, got {meta.get('dataset')!r}")
    return prompts.DOMAINS[meta["dataset"]]


def load_summaries(path):
    """{user: summary} from a summaries file written by summarize.py (one JSON object per line)."""
    return {r["user"]: r["summary"] for r in read_jsonl(path)}

# ----------------------------------------------------------------------------------------------------
# Statistics of a sample: the paper's Table 1, and a profile that says whether a sample behaves like real
# rows in the ways that decide a ranking (popularity, breadth of interests, session shape)

PAPER_TABLE1 = {  # paper Table 1
    "mind": {"attributes": 4, "train": 10_000, "val": 1_000, "test": 1_000, "history": 16.23, "tokens": 40.83},
    "amazon": {"attributes": 10, "train": 10_000, "val": 1_000, "test": 1_000, "history": 13.16, "tokens": 141.45},
}
TABLE1_ROWS = [("attributes", "# of different attributes"),
               ("train", "# of positive samples in the training set"),
               ("val", "# of positive samples in the validation set"),
               ("test", "# of positive samples in the test set"),
               ("history", "Avg. # of historical user behavior sequence"),
               ("tokens", "Avg. # of tokens corresponding to an item")]

# Each statistic, with its value on real rows. MIND: the users (first non-empty row, 11-26 ids) of a sample
# of MINDsmall_train's behaviors, with the news of 75% of its clicks; Amazon-M2: the 34,688 ES/FR/IT sessions
# of the task-2 test file. Definitions, over the users of a built sample (MIND) or the sessions (Amazon-M2):
# - "top 10% (1%) most-clicked items": the distinct items of the histories ranked by how often they occur in
#   them (ties by id), the first 10% (1%), at least one; the share of clicks on them is their occurrences
#   over all history occurrences. A target is "among" them when it is one of these items.
# - "clicked only once": distinct history items that occur exactly once, over all distinct history items.
# - "most frequent category": per user, the count of the history's most common Category over its length,
#   averaged over users; "distinct categories": per user, averaged; "target's category present": the share
#   of users whose target's Category occurs in their history.
# - "words per item text": whitespace words of "Category: …; SubCategory: …; Title: …" (the figures text
#   without the abstract, whichever --item-text built the sample), and of the title alone, averaged over
#   the sample's items (items.jsonl).
# - "session length": items in prev_items (Amazon-M2's test sessions have no next_item); "repeated items":
#   per session 1 - distinct items / length, averaged over sessions (a built sample: over histories).
REAL_MIND = [
    ("top10_share", "share of history clicks on the top 10% most-clicked items", 0.47),
    ("top1_share", "share of history clicks on the top 1% most-clicked items", 0.12),
    ("once", "clicked items clicked only once", 0.27),
    ("targets_top10", "targets among the top 10% most-clicked items", 0.33),
    ("favourite_share", "user's most frequent category, share of the history", 0.39),
    ("categories", "distinct categories per user", 6.7),
    ("target_category_seen", "target's category present in the history", 0.81),
    ("words", "words per item text (Category, SubCategory, Title)", 16.0),
    ("title_words", "words per item title", 11.0),
    ("history", "mean history length", 16.31),
]
REAL_AMAZON_SAMPLE = [
    ("history", "mean history length (sessions with 10-25 items)", 12.56),
    ("repeats", "repeated items within a history (1 - distinct/length)", 0.36),
]
REAL_AMAZON_SESSIONS = [
    ("length", "mean session length, all sessions", 3.83),
    ("kept_share", "sessions with 10-25 items", 0.033),
    ("kept_length", "mean length of those", 12.56),
    ("top10_share", "interactions on the top 10% most-seen items", 0.44),
    ("once", "items seen once", 0.22),
    ("repeats", "repeated items within a session (1 - distinct/length), all sessions", 0.15),
    ("kept_repeats", "repeated items within a session, sessions with 10-25 items", 0.36),
]


def mean(values):
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def popularity(counts):
    """Shares of the occurrences on the top 10% and 1% most frequent items, those items, and the share of
    items that occur once; `counts` is {item: occurrences}."""
    ranked = sorted(counts, key=lambda item: (-counts[item], item))
    total = sum(counts.values())
    stats = {"once": sum(c == 1 for c in counts.values()) / len(counts)}
    for name, share in (("top10", 0.10), ("top1", 0.01)):
        stats[name] = set(ranked[:max(1, round(share * len(ranked)))])
        stats[name + "_share"] = sum(counts[item] for item in stats[name]) / total
    return stats


MIND_FIELD_RE = re.compile(r"(?:^|; )(\w+): (.*?)(?=; (?:Category|SubCategory|Title|Abstract): |$)")


def mind_profile(users, items):
    """REAL_MIND's statistics for a built MIND sample (users of every split, items.jsonl's texts)."""
    fields = {item: dict(MIND_FIELD_RE.findall(text)) for item, text in items.items()}
    category = {item: f["Category"] for item, f in fields.items()}
    pop = popularity(collections.Counter(item for u in users for item in u["history"]))
    by_user = [collections.Counter(category[item] for item in u["history"]) for u in users]
    return {
        "top10_share": pop["top10_share"], "top1_share": pop["top1_share"], "once": pop["once"],
        "targets_top10": mean(u["target"] in pop["top10"] for u in users),
        "favourite_share": mean(max(c.values()) / len(u["history"]) for c, u in zip(by_user, users)),
        "categories": mean(len(c) for c in by_user),
        "target_category_seen": mean(category[u["target"]] in c for c, u in zip(by_user, users)),
        "words": mean(len(f"Category: {f['Category']}; SubCategory: {f['SubCategory']}; Title: {f['Title']}".split())
                      for f in fields.values()),
        "title_words": mean(len(f["Title"].split()) for f in fields.values()),
        "history": mean(len(u["history"]) for u in users),
    }


def repeats(ids):
    return 1 - len(set(ids)) / len(ids)


def session_profile(sessions):
    """REAL_AMAZON_SESSIONS' statistics of an iterable of sessions (lists of ids), read once."""
    lengths, kept_lengths, all_repeats, kept_repeats = [], [], [], []
    counts = collections.Counter()
    for ids in sessions:
        lengths.append(len(ids))
        counts.update(ids)
        if ids:
            all_repeats.append(repeats(ids))
        if MIN_HISTORY <= len(ids) <= MAX_HISTORY:
            kept_lengths.append(len(ids))
            kept_repeats.append(repeats(ids))
    pop = popularity(counts)
    return {"length": mean(lengths), "kept_share": len(kept_lengths) / len(lengths), "kept_length": mean(kept_lengths),
            "top10_share": pop["top10_share"], "once": pop["once"], "repeats": mean(all_repeats),
            "kept_repeats": mean(kept_repeats)}


def raw_sessions(raw):
    """The prev_items of every session in RAW/sessions_train.csv, all locales."""
    path = os.path.join(raw, "sessions_train.csv")
    for lineno, (prev_items, _, _) in read_csv(path, AMAZON_SESSION_HEADER, hashlib.sha256(), "sessions_train.csv"):
        yield parse_id_list(prev_items, path, lineno)


def table1(data_dir, count_tokens):
    """Table 1's rows for a built sample; count_tokens(texts) gives each text's number of tokens."""
    meta, items = load_meta(data_dir), load_items(data_dir)
    users = {split: load_split(data_dir, split) for split in SPLITS}
    protocol = meta["protocol"]
    names = protocol.get("fields") or field_names(meta["dataset"], "figures", protocol.get("abstract"))
    texts = list(items.values())
    present = [name for name in names if any(t.startswith(f"{name}: ") or f"; {name}: " in t for t in texts)]
    return {"attributes": len(present), **{split: len(users[split]) for split in SPLITS},
            "history": mean(len(u["history"]) for split in SPLITS for u in users[split]),
            "tokens": mean(count_tokens(texts))}


def cell(value):
    """Shares with three decimals (0.033), means with two (16.23), counts with thousands separators."""
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1 else f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def print_table(header, rows):
    """A markdown table: a header row, then one row per list of cells."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for cells in rows:
        print("| " + " | ".join(cell(c) for c in cells) + " |")
    print()


def print_profile(header, real, measured):
    print_table(["statistic", header, "real rows"], [(label, measured[key], value) for key, label, value in real])


def stats(args):
    if args.stats:
        import llm  # here, not at the top: it loads torch and transformers, which only token counting needs
        tokenizer_name = args.tokenizer or llm.DEFAULT_MODEL
        tokenizer = llm.load_tokenizer(tokenizer_name)
        meta = load_meta(args.stats)
        dataset, item_text = meta["dataset"], meta["protocol"].get("item_text", "figures")
        measured = table1(args.stats, lambda texts: [len(ids) for ids in
                                                     tokenizer(texts, add_special_tokens=False)["input_ids"]])
        counted_with = ("SmolLM2-135M-Instruct's tokenizer; the paper counted with Llama-2's"
                        if tokenizer_name == llm.DEFAULT_MODEL else f"{tokenizer_name}'s tokenizer")
        rows = [(label + (f" ({counted_with})" if key == "tokens" else ""), measured[key], PAPER_TABLE1[dataset][key])
                for key, label in TABLE1_ROWS]
        print_table(["Table 1", f"{args.stats} (--item-text {item_text})", f"paper, {dataset}"], rows)
        users = [u for split in SPLITS for u in load_split(args.stats, split)]
        if dataset == "mind":
            print_profile(args.stats, REAL_MIND, mind_profile(users, load_items(args.stats)))
        else:
            print_profile(args.stats, REAL_AMAZON_SAMPLE, {"history": mean(len(u["history"]) for u in users),
                                                           "repeats": mean(repeats(u["history"]) for u in users)})
    if args.raw:
        print_profile(f"{args.raw}/sessions_train.csv", REAL_AMAZON_SESSIONS, session_profile(raw_sessions(args.raw)))


def main(argv=None):
    args = parser.parse_args(argv)
    if args.stats is not None:
        if not args.stats and not args.raw:
            parser.error("--stats needs a built sample (--stats DATA) or Amazon-M2's raw files (--raw RAW), or both")
        if args.raw and not os.path.isfile(os.path.join(args.raw, "sessions_train.csv")):
            raise FileNotFoundError(f"{args.raw}/sessions_train.csv: no such file (--stats --raw profiles Amazon-M2's "
                                    "sessions; profile a MIND sample by building it and passing its folder)")
        stats(args)
        return
    if not args.dataset or not args.out:
        parser.error("give --dataset {mind,amazon} --raw RAW --out DATA, or --stats [DATA] [--raw RAW] "
                     "(generated samples in the raw files' formats come from generate.py)")
    if not args.raw:
        parser.error("--dataset needs --raw RAW (the folder with the raw files)")
    if min(args.n_train, args.n_val, args.n_test) < 0:
        parser.error("--n-train / --n-val / --n-test must be >= 0")
    if args.train_negatives < 1:
        parser.error(f"--train-negatives must be >= 1 (negatives per training user), got {args.train_negatives}")
    print("config:", json.dumps(vars(args)))
    build(args)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
