"""Raw MIND / Amazon-M2 files -> the paper's samples: per user a history, a target and saved negatives.

Generate an offline sample in a dataset's exact file format, then build samples from it (or from the
real files, with the same code):

$ python data.py --generate mind --out raw/mind --users 1000 --seed 0
$ python data.py --dataset mind --raw raw/mind --out data/mind --seed 0
$ python data.py --generate amazon --out raw/amazon --users 80000   # sessions, all locales: ~1,000 UK users
$ python data.py --dataset amazon --raw raw/amazon --out data/amazon --locale UK [--item-text authors]
$ python data.py --stats data/mind [--tokenizer meta-llama/Llama-2-7b-hf]   # Table 1's rows and a profile
$ python data.py --stats data/amazon --raw raw/amazon                       # ... and the raw sessions' profile

The protocol (paper §5.1, and what the authors' code did, see DESIGN.md):
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
import math
import os
import random
import re
import sys
import time

BLOCK_SIZE = 5  # items per block (paper §5.2.2)
SPLITS = ("train", "val", "test")
PAPER_SPLIT = {"train": 10_000, "val": 1_000, "test": 1_000}  # users per split (paper Table 1)
NEGATIVES = {"train": 1, "val": 20, "test": 20}  # 1:1 for training, 1:20 for ranking (paper §5.1)
MIN_HISTORY, MAX_HISTORY = 10, 25  # items before the target (paper §5.1)

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--generate", choices=["mind", "amazon"],
                    help="write a generated sample in this dataset's real file format to --out")
parser.add_argument("--users", type=int, default=1000,
                    help="with --generate: MIND users, or Amazon-M2 sessions over all locales (as in the real file, "
                         "few pass the filter: about 1 in 80 is a UK session with 10-25 items)")
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


def load_summaries(path):
    """{user: summary} from a summaries file written by summarize.py (one JSON object per line)."""
    return {r["user"]: r["summary"] for r in read_jsonl(path)}

# ----------------------------------------------------------------------------------------------------
# Reading raw files: line by line, every error names the file and the line


class Progress:
    """Bytes read of a file as a progress line: done, rate, time left, on stderr. A terminal gets one line
    redrawn every ~2 s; a log file gets a plain line every ~30 s, with no carriage returns to garble it."""

    def __init__(self, path, what):
        self.path, self.what, self.total = path, what, os.path.getsize(path)
        self.done, self.rows = 0, 0
        self.t0 = self.last = time.time()
        self.tty = sys.stderr.isatty()

    def update(self, nbytes, rows=1):
        self.done += nbytes
        self.rows += rows
        now = time.time()
        if now - self.last > (2 if self.tty else 30):
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            left = (self.total - self.done) / max(rate, 1e-9)
            start = "\r" if self.tty else ""  # back to the start of the line, to draw over it
            print(f"{start}{self.what}: {self.rows:,} lines, "
                  f"{self.done / 2**20:,.0f}/{self.total / 2**20:,.0f} MiB, "
                  f"{self.rows / max(now - self.t0, 1e-9):,.0f} lines/s, {left:.0f} s left ",
                  end="" if self.tty else "\n", file=sys.stderr)

    def close(self):
        line = f"{self.what}: {self.rows:,} lines in {time.time() - self.t0:.1f} s"
        print(f"\r{line}{' ' * 30}" if self.tty else line, file=sys.stderr)


def open_lines(path, sha, progress):
    """Decoded lines of a UTF-8 file, hashing the bytes as they are read, so each file is read once."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (expected the dataset's raw file here)")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            sha.update(raw)
            progress.update(len(raw))
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: bytes that are not UTF-8 at column {e.start + 1} "
                                 f"({raw[e.start:e.start + 4]!r}); the raw files are UTF-8") from None


def read_tsv(path, n_fields, sha, what):
    """Rows of a tab-separated file with no header, read with quoting off.

    MIND titles can start with a double quote: a CSV reader with default quoting would merge or shift
    fields there. No MIND field contains a tab, so a plain split is the correct reader."""
    progress = Progress(path, what)
    for lineno, line in open_lines(path, sha, progress):
        line = line.rstrip("\r\n")
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != n_fields:
            raise ValueError(f"{path}:{lineno}: expected {n_fields} tab-separated fields, "
                             f"got {len(fields)}: {line[:80]!r}")
        yield lineno, fields
    progress.close()


def read_csv(path, header, sha, what):
    """Rows of a comma-separated file with a header, quoting on (a quoted field may span lines)."""
    progress = Progress(path, what)
    lines = open_lines(path, sha, progress)
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
    progress.close()


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


def assign_splits(eligible, catalogue, args):
    """{split: [{"user", "history", "target", "negatives"}]} and the note on shrunk splits (None if not shrunk).

    The users are shuffled with the seed, then cut into the splits; the order of users within a split is this
    order. Shuffles eligible in place."""
    rng = random.Random(args.seed)
    rng.shuffle(eligible)
    sizes, note = split_sizes(len(eligible), {"train": args.n_train, "val": args.n_val, "test": args.n_test})
    if note:
        print(note)
    catalogue_ids = list(catalogue)  # file order, so the draws depend on the seed and the files alone
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
                     "negative_sampling": args.negatives, "abstract": args.abstract if args.dataset == "mind" else None,
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
        import trsr  # here, not at the top: it loads torch and transformers, which only token counting needs
        tokenizer_name = args.tokenizer or trsr.DEFAULT_MODEL
        tokenizer = trsr.load_tokenizer(tokenizer_name)
        meta = load_meta(args.stats)
        dataset, item_text = meta["dataset"], meta["protocol"].get("item_text", "figures")
        measured = table1(args.stats, lambda texts: [len(ids) for ids in
                                                     tokenizer(texts, add_special_tokens=False)["input_ids"]])
        counted_with = ("SmolLM2-135M-Instruct's tokenizer; the paper counted with Llama-2's"
                        if tokenizer_name == trsr.DEFAULT_MODEL else f"{tokenizer_name}'s tokenizer")
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

# ----------------------------------------------------------------------------------------------------
# Generated samples in the real file formats (see the end of this file for the vocabulary). What decides a
# ranking is held close to real rows (--stats prints the profile beside them, and tests keep it there):
# - popularity is long-tailed: a few items take a large share of the clicks and many are clicked once, and
#   targets follow it, less steeply than histories do (a last click is often on news too fresh for older
#   histories to hold);
# - a MIND user reads a broad mix of categories around a favourite that drifts part-way through the
#   history, so the target's category is usually, not always, one the history holds;
# - headlines are as long as real ones; Amazon-M2 sessions are mostly short (a few percent reach the
#   paper's 10-25 window) and the longer ones go back and forth between products.
# The constants below set these shapes, chosen so that a sample of a few thousand users profiles like the
# real rows (tests hold every statistic within 20%); the generator is otherwise plain sampling from them.

CATEGORY_SHARE = {  # share of MIND's clicks per category: news and sports lead, many small ones follow
    "news": 0.26, "sports": 0.13, "finance": 0.07, "lifestyle": 0.08, "foodanddrink": 0.05, "travel": 0.05,
    "health": 0.05, "entertainment": 0.05, "tv": 0.05, "music": 0.03, "movies": 0.03, "autos": 0.04,
    "weather": 0.05, "video": 0.06,
}
FAVOURITE = 0.35  # a user's weight on their favourite category, above a mix of all of them
INTEREST_SPREAD = 0.8  # a user's factor on a category's share is Exp(1)**INTEREST_SPREAD: larger is less even
DRIFT = 0.5  # share of users whose favourite category changes part-way through the history
NEWS_PER_USER, MAX_NEWS = 2.0, 101_000  # catalogue size per user, up to MIND-large's number of news
NEWS_ZIPF, NEWS_FLAT_HEAD = 1.2, 0.022  # popularity (zipf_weights)
FRESH_TARGET = 0.35  # share of targets drawn without regard to popularity
TITLE_TAIL = 0.8  # share of headlines that carry a TAILS clause ("…, officials say")
HISTORY_DECAY = 0.06  # within the 11-26 window, each extra History id is this much rarer (in log terms)

SESSION_LOG_MEAN, SESSION_LOG_SD = 0.97, 0.67  # prev_items per session: ceil(exp(normal(mean, sd)))
PRODUCTS_PER_SESSION, MAX_PRODUCTS = 0.7, 1_500_000  # catalogue size per session, up to Amazon-M2's products
PRODUCT_ZIPF, PRODUCT_FLAT_HEAD = 1.1, 0.03  # popularity (zipf_weights)
REVISIT_MAX, REVISIT_SCALE = 0.4, 3.0  # per step, the chance to go back to a product just seen: longer sessions
# go back and forth more, up to REVISIT_MAX


def generate(args):
    os.makedirs(args.out, exist_ok=True)
    if args.generate == "mind":
        generate_mind(args.out, args.users, args.seed)
    else:
        generate_amazon(args.out, args.users, args.seed)


def drifting_choices(rng, topics, n, n_favourites, explore=0.15):
    """n picks from `topics`: a user's few favourites, one of which is swapped for a new topic part-way
    through (so a summary has a shift to follow), with occasional clicks outside them."""
    favourites = rng.sample(topics, n_favourites)
    drift_at = rng.randint(n // 3, max(n // 3, 2 * n // 3)) if rng.random() < 0.7 else n + 1
    picks = []
    for i in range(n):
        if i == drift_at:
            favourites[rng.randrange(len(favourites))] = rng.choice([t for t in topics if t not in favourites])
        if rng.random() < explore:
            picks.append(rng.choice(topics))
        else:  # earlier favourites weigh more: a user has a main interest and side interests
            picks.append(favourites[min(int(rng.expovariate(1.2)), len(favourites) - 1)])
    return picks


def zipf_weights(rng, n, exponent, flat_head):
    """Popularity of n items in a random order: the item ranked r weighs 1 / (r + flat_head * n)**exponent, a
    long tail under a head that is flatter than a pure power law's (no single story takes every reader)."""
    ranks = list(range(1, n + 1))
    rng.shuffle(ranks)
    return [(r + flat_head * n) ** -exponent for r in ranks]


class Pool:
    """Items to draw from by popularity: ids with their cumulative weights."""

    def __init__(self):
        self.ids, self.cum = [], []

    def add(self, item, weight):
        self.ids.append(item)
        self.cum.append((self.cum[-1] if self.cum else 0) + weight)

    def draw(self, rng, avoid=()):
        """One id by popularity, redrawn a few times while it is in `avoid` (a reader rarely reopens a story)."""
        for _ in range(5):
            item = self.ids[bisect.bisect(self.cum, rng.random() * self.cum[-1])]
            if item not in avoid:
                break
        return item


def mind_categories(rng, n):
    """The categories of a user's n clicks: FAVOURITE of the weight on one favourite category, the rest on every
    category by its share of clicks times a random factor of the user's; for DRIFT of the users the favourite
    changes part-way through."""
    categories, shares = list(CATEGORY_SHARE), list(CATEGORY_SHARE.values())
    spread = [share * rng.expovariate(1) ** INTEREST_SPREAD for share in shares]
    total = sum(spread)
    first = rng.choices(range(len(shares)), weights=shares)[0]
    then = rng.choices(range(len(shares)), weights=[s * (k != first) for k, s in enumerate(shares)])[0]
    drift_at = rng.randint(n // 3, max(n // 3, 2 * n // 3)) if rng.random() < DRIFT else n
    picks = []
    for favourite, count in ((first, drift_at), (then, n - drift_at)):
        weights = [(1 - FAVOURITE) * w / total + FAVOURITE * (k == favourite) for k, w in enumerate(spread)]
        picks += rng.choices(categories, weights=weights, k=count)
    return picks


def history_length(rng):
    """History ids of a MIND user: about two thirds in the paper's 11-26 window, the shorter ones commoner;
    the rest exercise the filter."""
    if rng.random() < 0.65:
        while True:  # a geometric tail, cut to the window
            extra = int(rng.expovariate(HISTORY_DECAY))
            if extra <= 15:
                return 11 + extra
    return rng.choice([rng.randint(1, 10), rng.randint(27, 45)])


def fill(rng, template, **fixed):
    """The template with each {slot} replaced: by `fixed[slot]` when given, else a random SLOTS[slot] word."""
    return re.sub(r"\{(\w+)\}", lambda m: fixed.get(m.group(1)) or rng.choice(SLOTS[m.group(1)]), template)


def write_mind_news(rng, path, n_news):
    """news.tsv with n_news stories; returns {category: Pool of its news ids}."""
    subcats = [(cat, sub) for cat, subs in NEWS.items() for sub in subs]
    categories = list(CATEGORY_SHARE)
    popularity = zipf_weights(rng, n_news, NEWS_ZIPF, NEWS_FLAT_HEAD)
    pools = {cat: Pool() for cat in categories}
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for k in range(n_news):
            if k < len(subcats):  # every subcategory once, then as many stories as its category's share of clicks
                cat, sub = subcats[k]
            else:
                cat = rng.choices(categories, weights=[CATEGORY_SHARE[c] for c in categories])[0]
                sub = rng.choice(list(NEWS[cat]))
            nid = f"N{10000 + k * 7 + rng.randrange(7)}"
            title = fill(rng, rng.choice(NEWS[cat][sub]))
            if rng.random() < TITLE_TAIL:
                title += fill(rng, rng.choice(TAILS))
            r = rng.random()
            if r < 0.04:  # real titles can start with a double quote: a CSV reader would mangle the row
                title = f'"{title.split(":")[0]}" {rng.choice(["is back", "stuns fans", "sparks debate"])}'
            elif r < 0.06:  # and carry zero-width spaces
                title = title.replace(" ", " \u200b", 1)
            abstract = "" if rng.random() < 0.15 else fill(rng, rng.choice(ABSTRACTS))
            entities = "[]" if rng.random() < 0.5 else json.dumps([{
                "Label": title.split()[0], "Type": "O", "WikidataId": f"Q{rng.randrange(10**6)}", "Confidence": 1.0,
                "OccurrenceOffsets": [0], "SurfaceForms": [title.split()[0]]}])
            f.write(f"{nid}\t{cat}\t{sub}\t{title}\t{abstract}\thttps://assets.msn.com/labs/mind/AA{nid[1:]}.html"
                    f"\t{entities}\t[]\n")
            pools[cat].add(nid, popularity[k])
    return pools


def mind_history(rng, pools):
    """A user's History ids, oldest first: empty for a few users, and with the real file's flaws."""
    n = 0 if rng.random() < 0.05 else history_length(rng)
    history = []
    for i, category in enumerate(mind_categories(rng, n)):
        pool = pools[category]
        if i == n - 1 and rng.random() < FRESH_TARGET:  # the last id is the target
            history.append(rng.choice(pool.ids))
        else:
            history.append(pool.draw(rng, avoid=history))
    if n and rng.random() < 0.08:  # a history can repeat an id
        j = rng.randrange(n)
        history.insert(j, history[rng.randrange(j + 1)])
    if n and rng.random() < 0.05:  # and name news that news.tsv lacks
        history.insert(rng.randrange(len(history)), f"N{rng.randrange(10**6, 2 * 10**6)}")
    return history


def generate_mind(out, n_users, seed):
    rng = random.Random(seed)
    assert set(CATEGORY_SHARE) == set(NEWS), "each category of NEWS needs its CATEGORY_SHARE, and only those"
    n_news = min(max(2000, int(NEWS_PER_USER * n_users)), MAX_NEWS)
    pools = write_mind_news(rng, os.path.join(out, "news.tsv"), n_news)
    all_news = [nid for cat in CATEGORY_SHARE for nid in pools[cat].ids]
    rows = []
    for u in range(n_users):
        user = f"U{100 + u * 3 + rng.randrange(3)}"
        history = mind_history(rng, pools)
        n_rows = rng.randint(1, 4)
        empty_first = n_rows > 1 and rng.random() < 0.05  # the first row with a non-empty History is the one used
        for r in range(n_rows):
            shown = rng.choices(all_news, k=4)
            impressions = " ".join(f"{x}-{int(i == 0)}" for i, x in enumerate(shown))
            hist = "" if (r == 0 and empty_first) else " ".join(history)
            rows.append((user, hist, impressions))
    rng.shuffle(rows)
    with open(os.path.join(out, "behaviors.tsv"), "w", encoding="utf-8", newline="\n") as f:
        for k, (user, hist, impressions) in enumerate(rows, 1):
            day, hour, minute, second = rng.randint(9, 15), rng.randint(1, 12), rng.randrange(60), rng.randrange(60)
            stamp = f"11/{day}/2019 {hour}:{minute:02d}:{second:02d} {rng.choice(['AM', 'PM'])}"
            f.write(f"{k}\t{user}\t{stamp}\t{hist}\t{impressions}\n")
    print(f"generated MIND sample in {out}: {n_news:,} news, {n_users:,} users, {len(rows):,} behaviors rows")


def numpy_list(ids, width=75):
    """An id list as numpy prints it: "['a' 'b' ...]", wrapped onto new lines (starting with a space) at `width`
    characters."""
    lines, line = [], "["
    for i, x in enumerate(ids):
        token = f"'{x}'"
        if i and len(line) + 1 + len(token) + 1 > width:
            lines.append(line)
            line = " " + token
        else:
            line += (" " if i else "") + token
    return "\n".join(lines + [line + "]"])


def product_id(rng, book):
    if book:  # ISBN-10-like ids, some ending in X
        digits = "".join(rng.choice("0123456789") for _ in range(9))
        return digits + rng.choice("0123456789X")
    return "B0" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(8))


LOCALES = ["UK", "DE", "JP", "FR", "IT", "ES"]


def generate_amazon(out, n_sessions, seed):
    rng = random.Random(seed)
    intents = list(PRODUCTS)
    n_products = min(max(2000, int(n_sessions * PRODUCTS_PER_SESSION)), MAX_PRODUCTS)
    popularity = zipf_weights(rng, n_products, PRODUCT_ZIPF, PRODUCT_FLAT_HEAD)
    pools = {(loc, t): Pool() for loc in LOCALES for t in intents}
    with open(os.path.join(out, "products_train.csv"), "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(AMAZON_PRODUCT_HEADER)
        for k in range(n_products):
            intent = intents[k % len(intents)]
            spec = PRODUCTS[intent]
            pid = product_id(rng, intent == "books" and rng.random() < 0.6)
            noun = rng.choice(list(spec["nouns"]))
            brand, colour = rng.choice(spec["brands"]), rng.choice(SLOTS["colour"])
            material, size = rng.choice(spec["nouns"][noun]), rng.choice(spec["sizes"])
            title = fill(rng, rng.choice(spec["titles"]), brand=brand, noun=noun, colour=colour, material=material,
                         size=size)
            size = size if rng.random() < 0.5 else ""
            model = f"{brand[:3].upper()}-{rng.randrange(100, 999)}" if rng.random() < 0.4 else ""
            author = rng.choice(SLOTS["author"]) if intent == "books" else ""
            sentences = rng.sample(spec["descs"], rng.randint(1, 2)) + rng.sample(DESC_EXTRAS, rng.randint(0, 2))
            desc = " ".join(fill(rng, s, noun=noun.lower(), material=material.lower()) for s in sentences)
            desc = desc[0].upper() + desc[1:]
            if rng.random() < 0.1:  # descriptions hold commas, quotes and line breaks: CSV quoting must carry them
                desc += '\nIncludes: 1 x ' + noun.lower() + ', "ready to use" out of the box.'
            price = round(rng.uniform(*spec["price"]), 2)
            home = rng.choice(["UK", "UK", "DE", "JP", "FR", "IT", "ES"])
            others = [loc for loc in LOCALES if loc != home and rng.random() < 0.15]
            for loc in [home] + others:  # the same id under several locales, each with its own row
                local_price = price if loc == home else round(price * rng.uniform(0.9, 1.2), 2)
                row = [pid, loc, title, f"{local_price}", brand, colour if rng.random() < 0.8 else "", size, model,
                       material if rng.random() < 0.7 else "", author, desc if rng.random() < 0.9 else ""]
                writer.writerow(row)
                pools[(loc, intent)].add(pid, popularity[k])
    with open(os.path.join(out, "sessions_train.csv"), "w", encoding="utf-8", newline="") as f:
        f.write("prev_items,next_item,locale\n")
        for _ in range(n_sessions):
            loc = rng.choice(["UK", "UK", "UK", "DE", "JP", "FR", "IT", "ES"])
            n = math.ceil(math.exp(rng.gauss(SESSION_LOG_MEAN, SESSION_LOG_SD)))
            revisit = REVISIT_MAX * (1 - math.exp(-(n - 1) / REVISIT_SCALE))
            open_intents = [t for t in intents if pools[(loc, t)].ids]
            *picks, last = drifting_choices(rng, open_intents, n + 1, rng.randint(1, 2), explore=0.08)
            prev = []
            for t in picks:
                if prev and rng.random() < revisit:
                    prev.append(rng.choice(prev[-3:]))
                else:
                    prev.append(pools[(loc, t)].draw(rng, avoid=prev))
            target = pools[(loc, last)].draw(rng, avoid=prev)  # a product the session has not shown yet
            f.write(f'"{numpy_list(prev)}",{target},{loc}\n')
    print(f"generated Amazon-M2 sample in {out}: {n_products:,} products, {n_sessions:,} sessions")

# ----------------------------------------------------------------------------------------------------
# Vocabulary of the generated samples: MIND's real categories and subcategories, headline templates,
# and product families with brands, materials and descriptions. Edit freely: nothing depends on it.

SLOTS = {
    "team": ["Patriots", "Cowboys", "Packers", "Chiefs", "Eagles", "49ers", "Steelers", "Seahawks", "Bears", "Rams"],
    "nba": ["Lakers", "Celtics", "Warriors", "Bucks", "Knicks", "Heat", "Nuggets", "Suns"],
    "club": ["Arsenal", "Barcelona", "Real Madrid", "Bayern München", "Liverpool", "Juventus", "Paris Saint-Germain"],
    "player": ["Tom Brady", "Patrick Mahomes", "LeBron James", "Stephen Curry",
               "Lionel Messi", "Zlatan Ibrahimović", "Aaron Rodgers"],
    "golfer": ["Tiger Woods", "Rory McIlroy", "Brooks Koepka", "Jordan Spieth"],
    "tennis": ["Serena Williams", "Rafael Nadal", "Novak Đoković", "Naomi Osaka"],
    "city": ["Seattle", "Chicago", "Houston", "Miami", "Denver",
             "Boston", "Atlanta", "Phoenix", "Portland", "Nashville"],
    "state": ["Texas", "Ohio", "California", "Florida", "Michigan", "Georgia", "Oregon", "Arizona"],
    "country": ["China", "Mexico", "Canada", "France", "Germany", "Japan", "Brazil", "India", "Türkiye"],
    "politician": ["the Senate", "the House", "the governor", "the White House", "city council", "the mayor"],
    "policy": ["health care", "the budget", "impeachment", "tariffs", "immigration", "gun control", "climate policy"],
    "company": ["Apple", "Boeing", "Tesla", "Amazon", "Walmart", "Nestlé", "Uber", "Netflix", "Ford", "Disney"],
    "celebrity": ["Taylor Swift", "Beyoncé", "Brad Pitt", "Jennifer Lopez",
                  "Kim Kardashian", "Ryan Reynolds", "Zoë Kravitz"],
    "movie": ["Joker", "Frozen 2", "The Irishman", "Star Wars", "Ford v Ferrari", "Knives Out"],
    "show": ["The Voice", "Dancing With the Stars", "The Crown", "Stranger Things", "The Mandalorian"],
    "dish": ["chicken soup", "pumpkin pie", "beef stew", "mac and cheese",
             "crème brûlée", "banana bread", "lasagna"],
    "ingredient": ["garlic", "butter", "pumpkin", "cinnamon", "avocado", "sweet potatoes", "cranberries"],
    "place": ["national park", "beach town", "small town", "ski resort", "island", "road trip stop"],
    "airline": ["Southwest Airlines", "Delta", "United", "American Airlines", "JetBlue"],
    "car": ["Ford F-150", "Tesla Model 3", "Toyota RAV4", "Jeep Wrangler", "Honda Civic", "Chevrolet Corvette"],
    "animal": ["dog", "cat", "bear", "puppy", "horse", "owl", "dolphin"],
    "number": ["3", "5", "7", "10", "12", "15", "20", "25", "50"],
    "condition": ["diabetes", "heart disease", "insomnia", "back pain", "high blood pressure", "migraines"],
    "weather": ["snowstorm", "arctic blast", "heavy rain", "severe storms", "record cold", "heat wave"],
    "colour": ["Navy", "Black", "White", "Grey", "Ochre", "Sage Green", "Red", "Blush Pink", "Charcoal"],
    "author": ["J. K. Rowling", "Stephen King", "Jamie Oliver", "Yotam Ottolenghi",
               "Agatha Christie", "Haruki Murakami", "Mary Berry"],
    "feature": ["non-slip", "quick-drying", "machine washable", "extra thick",
                "eco-friendly", "heavy duty", "compact", "lightweight"],
    "use": ["everyday use", "gifts", "small spaces", "families", "travel", "beginners", "professionals"],
}

NEWS = {
    "sports": {
        "football_nfl": ["{team} beat {team} in overtime thriller", "{player} leads {team} to comeback win",
                         "{team} quarterback out for season with knee injury",
                         "Week {number} NFL power rankings: {team} climb",
                         "{team} fire head coach after {number} straight losses"],
        "basketball_nba": ["{nba} rout {nba} behind {number} threes", "{player} scores {number} in {nba} win",
                           "{nba} trade rumors: what comes next", "Injury update: {nba} star to miss {number} games"],
        "soccer": ["{club} edge {club} in Champions League clash", "{player} scores twice as {club} go top",
                   "{club} manager under pressure after defeat", "Transfer talk: {club} eye {number} million move"],
        "golf": ["{golfer} takes lead into final round", "{golfer} withdraws from tournament with injury",
                 "How {golfer} won in {city}"],
        "tennis": ["{tennis} advances to the semifinals", "{tennis} upset in straight sets",
                   "{tennis} wins title in {city}"],
    },
    "news": {
        "newspolitics": ["{politician} votes on {policy} bill", "What the {policy} fight means for {state}",
                         "Poll: voters in {state} split on {policy}", "{politician} delays decision on {policy}"],
        "newsus": ["{city} police search for suspect after shooting", "{state} town recovers after {weather}",
                   "School board in {city} approves new plan", "{number} things to know about the {city} election"],
        "newsworld": ["{country} and {country} agree on trade deal", "Protests grow in {country} capital",
                      "{country} election results: what we know", "Earthquake shakes northern {country}"],
        "newscrime": ["Man arrested after chase through {city}", "{city} detectives investigate break-ins",
                      "Seattle police officer fires gun while breaking up scuffle",
                      "Jury finds {city} man guilty of fraud"],
        "newsscienceandtechnology": ["Scientists discover new species of {animal}", "{company} unveils new AI chip",
                                     "NASA shares stunning images of Jupiter", "Why {company} is betting on robots"],
    },
    "finance": {
        "finance-companies": ["{company} shares jump after earnings beat", "{company} to cut {number},000 jobs",
                              "{company} CEO steps down", "Why {company} stock fell {number}% today"],
        "markets": ["Dow closes at record high as {company} rallies", "Stocks slide on {country} trade fears",
                    "{number} stocks to buy before the end of the year"],
        "personalfinance": ["{number} ways to save money on groceries", "How to pay off debt in {number} months",
                            "The best credit cards for {use}", "Retirement: {number} mistakes to avoid"],
        "finance-real-estate": ["Home prices in {city} hit new high",
                                "{number} cheapest places to buy a house in {state}",
                                "Mortgage rates fall for {number}th week"],
    },
    "foodanddrink": {
        "recipes": ["{number} cozy {dish} recipes for fall", "The best {dish} you'll ever make",
                    "3 new {ingredient} recipes you'll be making all season", "Easy {dish} with {ingredient}"],
        "restaurantsandnews": ["The best {dish} in {city}", "{company} adds {dish} to its menu",
                               "{number} restaurants closing in {state}", "Chef opens new bistro in {city}"],
        "quickandeasy": ["{number}-minute dinners with {ingredient}", "Sheet-pan {dish} for busy weeknights"],
    },
    "travel": {
        "travelnews": ["{airline} flight diverted after passenger disturbance", "{airline} adds new routes to {city}",
                       "Airport delays pile up ahead of Thanksgiving", "{airline} changes its baggage rules"],
        "traveltripideas": ["The spookiest {place} in every state", "{number} best {place}s to visit this winter",
                            "A perfect weekend in {city}", "Hidden gems: the most charming {place} in {state}"],
    },
    "health": {
        "wellness": ["{number} habits of people who never get sick", "Why you're always tired, according to doctors",
                     "How to sleep better in {number} steps"],
        "medical": ["New treatment shows promise for {condition}", "Early signs of {condition} you should know",
                    "Doctors warn about {condition} in young adults"],
        "nutrition": ["{number} foods that help with {condition}", "Is {ingredient} good for you?"],
    },
    "entertainment": {
        "celebrity": ["{celebrity} stuns on the red carpet", "{celebrity} opens up about new album",
                      "{celebrity} and {celebrity} spotted together in {city}"],
    },
    "movies": {
        "movienews": ["'{movie}' tops the box office again", "{celebrity} joins the cast of '{movie}' sequel",
                      "Review: '{movie}' is the film of the year"],
    },
    "tv": {
        "tvnews": ["'{show}' finale recap: {number} big moments", "'{show}' renewed for another season",
                   "{celebrity} eliminated from '{show}'"],
    },
    "music": {
        "musicnews": ["{celebrity} announces {number}-city tour", "{celebrity} tops the charts with new single"],
    },
    "lifestyle": {
        "lifestylehomeandgarden": ["Genius tiny homes for big families",
                                   "{number} ways to make a small kitchen feel bigger",
                                   "How to keep your garden alive through winter"],
        "lifestyleroyals": ["Prince Harry and Meghan share new photo", "The Queen's {number} most memorable outfits",
                            "Royal family plans {city} visit"],
        "pets": ["{number} {animal} breeds that are great with kids",
                 "This {animal} was rescued from a storm drain in {city}"],
    },
    "autos": {
        "autosnews": ["{car} recalled over brake issue", "The {number} most reliable cars of the year",
                      "{company} unveils electric pickup"],
        "autosreview": ["Review: the new {car} is better than ever", "{car} vs {car}: which one to buy"],
    },
    "weather": {
        "weathertopstories": ["{weather} to hit {state} this weekend", "{city} braces for {weather}",
                              "Forecast: {weather} expected across the Midwest"],
    },
    "video": {
        "animals": ["Watch: {animal} plays in the snow in {city}", "Baby {animal} meets its family for the first time"],
        "news": ["Man testing new tires crashes into gas station", "Watch: firefighters rescue {animal} in {city}"],
    },
}

TAILS = [  # clauses that real headlines carry after their subject
    ", officials say", " after weeks of speculation", ": here's what we know so far", ", and why it matters",
    " for the first time in {number} years", ", according to a new report", " as fans react on social media",
    " ahead of the busy holiday weekend", ": what you need to know", ", and people can't stop talking about it",
    " in {city} on Tuesday night", " despite growing concerns from experts", ", sources say",
    " — and the photos are stunning", " after a surprising turn of events", ": see the full list",
    " this week, and experts weigh in", " with {number} days to go", " amid a wave of criticism",
]

ABSTRACTS = [
    "Here's what you need to know about the story everyone in {city} is talking about.",
    "The {number} details that matter, and what happens next.",
    "Experts weigh in on what it means for people in {state}.",
    "From {city} to {country}, here is the full story.",
    "It took {number} years, but it finally happened — and fans couldn’t be happier.",
]

DESC_EXTRAS = [  # sentences any product description may add
    "Package includes 1 x {noun} and a user guide.", "Made to a high standard and tested for quality and safety.",
    "If you have any questions, please contact us and we will reply within 24 hours.",
    "Please allow 1-2 cm difference due to manual measurement.", "Colours may vary slightly from the photos.",
    "Our {noun} makes a thoughtful gift for birthdays, Christmas and housewarmings.",
]

PRODUCTS = {
    "bath": {"brands": ["Keplin", "Olivia Rocco", "Dreamscene", "Sleepdown", "Homescapes"],
             "nouns": {"Bath Mat": ["Rubber", "Microfibre", "Memory Foam"],
                       "Bath Towel Set": ["Egyptian Cotton", "Bamboo", "Cotton"],
                       "Bath Rug": ["Chenille", "Microfibre"], "Shower Curtain": ["Polyester", "PEVA"],
                       "Hand Towels": ["Cotton", "Bamboo"]},
             "sizes": ["50 x 80 cm", "60 x 100 cm", "Pack of 4", "Standard"],
             "titles": ["{brand} {feature} {noun}, {colour}",
                        "{brand} {material} {noun} for Bathroom - {feature}, {colour}",
                        "Luxury {material} {noun} by {brand}, {feature}"],
             "descs": ["Super soft {material} {noun}, {feature} and water absorbent. Ideal for {use}.",
                       "This {noun} is made from 100% {material}; {feature}, easy to clean and built to last."],
             "price": (4.5, 35.0)},
    "kitchen": {"brands": ["Tefal", "Joseph Joseph", "Salter", "KitchenCraft", "Le Creuset"],
                "nouns": {"Frying Pan": ["Non-Stick Aluminium", "Cast Iron", "Stainless Steel"],
                          "Knife Set": ["Stainless Steel", "Ceramic"], "Chopping Board": ["Bamboo", "Oak", "Plastic"],
                          "Casserole Dish": ["Cast Iron", "Stoneware"], "Kettle": ["Stainless Steel", "Glass"]},
                "sizes": ["24 cm", "28 cm", "1.7 L", "Set of 3"],
                "titles": ["{brand} {material} {noun}, {feature}, {colour}", "{brand} {noun} - {material}, {feature}"],
                "descs": ["A {feature} {noun} in {material} that heats evenly. Dishwasher safe; perfect for {use}.",
                          "Cook like a pro with this {material} {noun}. {feature} design for {use}."],
                "price": (8.0, 120.0)},
    "phone": {"brands": ["Anker", "Spigen", "ESR", "Belkin", "UGREEN"],
              "nouns": {"USB-C Charger": ["GaN", "Plastic"], "Phone Case": ["Silicone", "TPU", "Leather"],
                        "Screen Protector": ["Tempered Glass"], "Power Bank": ["Aluminium", "Plastic"],
                        "Charging Cable": ["Nylon Braided", "TPE"]},
              "sizes": ["1 m", "2 m", "10000 mAh", "20000 mAh", "Pack of 2"],
              "titles": ["{brand} {noun} for iPhone 14, {feature}, {colour}", "{brand} {material} {noun}, {feature}"],
              "descs": ["{feature} {noun} with {material} finish. Fast charging and wide compatibility for {use}.",
                        "Protect your phone with this {material} {noun}: {feature}, precise cut-outs."],
              "price": (5.0, 45.0)},
    "books": {"brands": ["Penguin", "HarperCollins", "Bloomsbury", "Vintage", "Ebury"],
              "nouns": {n: ["Paperback", "Hardcover"]
                        for n in ["Cookbook", "Crime Novel", "Fantasy Novel", "Children's Picture Book", "Biography"]},
              "sizes": ["320 pages", "416 pages", "288 pages"],
              "titles": ["The {colour} House: A {noun} ({material})", "Simply Delicious: {noun} for {use}",
                         "Murder at the {place}: A {noun}"],
              "descs": ["The bestselling {noun} everyone is talking about, now in {material}.",
                        "A {noun} for {use}, from a much-loved author; {material}."],
              "price": (3.99, 28.0)},
    "toys": {"brands": ["LEGO", "Playmobil", "Hasbro", "Melissa & Doug", "VTech"],
             "nouns": {"Building Set": ["Plastic"], "Board Game": ["Cardboard"], "Jigsaw Puzzle": ["Wood", "Cardboard"],
                       "Plush Toy": ["Plush", "Organic Cotton"], "Remote Control Car": ["Plastic", "Metal"]},
             "sizes": ["Ages 3+", "Ages 6+", "Ages 8-12", "500 pieces"],
             "titles": ["{brand} {noun}, {colour}, {feature}", "{brand} {material} {noun} for Kids"],
             "descs": ["Hours of fun with this {material} {noun}. A great gift for {use}.",
                       "{feature} {noun} that sparks creativity; made from safe {material}."],
             "price": (6.0, 90.0)},
    "garden": {"brands": ["Gardena", "Spear & Jackson", "Bosch", "Kingfisher", "Hozelock"],
               "nouns": {"Garden Hose": ["Rubber", "PVC"], "Pruning Shears": ["Carbon Steel", "Stainless Steel"],
                         "Solar Lights": ["Plastic", "Glass"],
                         "Plant Pots": ["Terracotta", "Ceramic", "Recycled Plastic"],
                         "Lawn Mower": ["Steel", "Plastic"]},
               "sizes": ["15 m", "30 m", "Set of 10", "Pack of 3"],
               "titles": ["{brand} {feature} {noun}, {colour}", "{brand} {material} {noun} for Garden and Patio"],
               "descs": ["{feature} {noun} made of {material}, weatherproof and ready for {use}.",
                         "Keep your garden tidy with this {material} {noun}; {feature}."],
               "price": (7.0, 150.0)},
    "beauty": {"brands": ["NIVEA", "Creightons", "The Body Shop", "Garnier", "L'Oréal"],
               "nouns": {n: ["Almond Oil", "Shea Butter", "Vitamin C", "Aloe Vera", "Mango & Papaya"]
                         for n in ["Shower Creme", "Body Lotion", "Face Serum", "Shampoo", "Hand Cream"]},
               "sizes": ["250 ml", "500 ml", "50 ml", "Pack of 6"],
               "titles": ["{brand} {noun} with {material} ({size})", "{brand} Care {noun} Soft, {material}, {feature}"],
               "descs": ["Caring {noun} enriched with {material}, moisturising with a mild scent. "
                         "Vegan and cruelty free.",
                         "{feature} {noun} with {material} for soft, nourished skin."],
               "price": (1.0, 25.0)},
    "fitness": {"brands": ["Gymshark", "Reebok", "Bowflex", "Myprotein", "Decathlon"],
                "nouns": {"Yoga Mat": ["TPE", "Natural Rubber", "Cork"], "Dumbbell Set": ["Neoprene", "Cast Iron"],
                          "Resistance Bands": ["Latex", "Fabric"], "Protein Powder": ["Whey", "Pea Protein"],
                          "Running Shoes": ["Mesh", "Knit"]},
                "sizes": ["6 mm", "2 x 5 kg", "1 kg", "UK 9", "Set of 5"],
                "titles": ["{brand} {feature} {noun}, {colour}", "{brand} {material} {noun} for Home Workouts"],
                "descs": ["{feature} {noun} in {material}, ideal for {use} and home gyms.",
                          "Train harder with this {material} {noun}: {feature} and comfortable."],
                "price": (9.0, 80.0)},
    "audio": {"brands": ["Sony", "JBL", "Bose", "Sennheiser", "Soundcore"],
              "nouns": {"Wireless Earbuds": ["Plastic"], "Bluetooth Speaker": ["Fabric", "Rubberised Plastic"],
                        "Over-Ear Headphones": ["Protein Leather", "Aluminium"], "Soundbar": ["Aluminium", "Fabric"]},
              "sizes": ["Standard", "Mini", "Pro"],
              "titles": ["{brand} {noun} with Noise Cancelling, {colour}", "{brand} {feature} {noun}, 30h Battery"],
              "descs": ["Rich sound from a {feature} {noun}; {material} finish and long battery life for {use}.",
                        "{noun} with deep bass and clear calls, {material} build."],
              "price": (19.0, 300.0)},
}


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
    if bool(args.generate) == bool(args.dataset) or not args.out:
        parser.error("give either --generate {mind,amazon} --out RAW, or --dataset {mind,amazon} --raw RAW --out DATA")
    if args.generate:
        generate(args)
        return
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
