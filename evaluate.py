"""Score every user's 21 candidates with the recommender and report Recall@K, MRR@K, NDCG@K (K = 3, 5, 10)
and AUC, each with a 95% bootstrap interval, next to baselines ranked on exactly the same candidates.

p = softmax(logit_yes, logit_no) at the prompt's last position (paper eq. 2-3), in fp32. The 21 prompts
of a user share everything before the candidate: that prefix runs once and its key/value cache serves all
21 candidate suffixes in one batch (--no-prefix-cache scores one whole prompt per candidate instead).

$ python evaluate.py --data data/mind --summaries S --adapter runs/mind/rec/epoch_1 --split test --out runs/mind/eval
$ python evaluate.py --data data/mind --summaries S --split test --out runs/mind/zero-shot   # the base model
$ python evaluate.py --data data/mind --summaries S --adapter runs/mind/rec --out runs/mind/eval   # best epoch on val
$ python evaluate.py --data data/mind --summaries S --adapter runs/mind/full --out runs/mind/eval-full   # --lora none
$ python evaluate.py --data data/mind --split test --out runs/mind/cheap --baselines-only   # random, popularity, TF-IDF
$ python evaluate.py --data data/mind --split test --out runs/mind/probe --baselines-only \
      --probe-summaries hierarchical=runs/mind/summaries-hierarchical.jsonl   # + TF-IDF from the summary alone
$ torchrun --standalone --nproc_per_node 8 evaluate.py ...the same flags...

Ties never favour the positive: a metric is its expected value when tied candidates are put in a uniformly
random order (with all 21 scores equal, Recall@3 = 3/21). Writes to --out: scores.jsonl (one line per user:
user, candidates, p — the first candidate is the true next item), results.json (metrics with intervals,
config, model, adapter, data hash) and results.md (a table in the style of the paper's Table 2). An
interrupted evaluation resumes: users already scored are not scored again.
"""
import argparse
import gc
import glob
import hashlib
import json
import math
import os
import re
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch.distributed as dist

import common
import data
import llm  # before peft: it quiets an import-time warning of bitsandbytes, which peft imports

from peft import PeftModel

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--data", required=True, help="folder written by data.py")
parser.add_argument("--summaries", help="summaries file written by summarize.py (not needed for --tallrec, "
                    "--no-summary or baselines)")
parser.add_argument("--adapter", nargs="*", default=[], help="checkpoint folder(s) written by train.py: a LoRA adapter "
                    "or a full model (--lora none); a train.py --out folder means all its epoch_N checkpoints; "
                    "several: the best on val (Recall@3+@5+@10) is reported on --split")
parser.add_argument("--split", default="test", choices=["val", "test"])
parser.add_argument("--out", required=True, help="folder for scores.jsonl, results.json, results.md")
parser.add_argument("--model", default=None,
                    help="base model (default: the adapter's training model, else the bundled SmolLM2)")
parser.add_argument("--name", default=None,
                    help="the method's name in the table (default: from the adapter's training config)")
parser.add_argument("--limit", type=int, default=0, help="score only the first N users of the split (0: all)")
parser.add_argument("--no-prefix-cache", action="store_true",
                    help="score one whole prompt per candidate, no shared prefix")
parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                    help="auto: bf16 on GPU, fp32 on CPU")
parser.add_argument("--quantize", default="none", choices=["none", "8bit", "4bit"])
# prompt settings for the base model; an adapter brings those it was trained with
llm.add_prompt_flags(parser)  # --recent, --no-summary, --tallrec, --max-len, as train.py has them
# baselines and statistics
parser.add_argument("--baselines", action="store_true", help="also rank with random, popularity and text similarity")
parser.add_argument("--baselines-only", action="store_true", help="only the baselines: no model is loaded")
parser.add_argument("--probe-summaries", nargs="*", default=[], metavar="NAME=PATH",
                    help="summaries files written by summarize.py, each ranked by TF-IDF from the summary alone (no "
                    "LLM) as the row 'summary probe: NAME (TF-IDF)', with or without --baselines")
parser.add_argument("--include", nargs="*", default=[],
                    help="other evaluate.py --out folders (same data and split) to put in the table")
parser.add_argument("--full-ranking", action="store_true",
                    help="with --baselines-only: rank each target against every item of items.jsonl but the user's "
                    "history (Recall, MRR, NDCG @10/20/50), with the cheap rankers, the summary probes and the "
                    "--include folders of baselines.py --full-ranking")
parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples over users for the intervals")
parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")

KS = (3, 5, 10)

# ---- Metrics (numpy) ----
# scores: [users, candidates], the true next item in column 0. Tie rule: the positive's rank is uniform
# over the places it shares with the candidates scored exactly like it, and each metric is its expectation
# under that rule. So ties never favour the positive (the authors' argsort put it first: all-equal scores
# gave Recall@3 = MRR = 1), and a constant scorer gets exactly what a random ranking gets on average.


def rank_bounds(scores):
    """(above, tied): per user, how many negatives score higher than the positive, and how many the same."""
    scores = np.asarray(scores, dtype=np.float64)
    pos, neg = scores[:, :1], scores[:, 1:]
    return (neg > pos).sum(1), (neg == pos).sum(1)


def per_user_metrics(scores):
    """{metric name: array of one value per user} for Recall@K, MRR@K, NDCG@K and AUC."""
    above, tied = rank_bounds(scores)
    return rank_metrics(above, tied, np.asarray(scores).shape[1] - 1)


def rank_metrics(above, tied, n_negatives, ks=KS, ranks_up_to=None):
    """{metric name: array of one value per user} for Recall@K, MRR@K, NDCG@K (K in ks) and AUC, of a positive that
    `above` negatives score higher than and `tied` the same, among n_negatives (one number, or one per user).

    The expectation runs over every rank the positive could take, 1 .. ranks_up_to (default 1 + n_negatives);
    a metric @K is 0 beyond rank K, so ranking a whole catalogue needs no rank past max(ks)."""
    above, tied = np.asarray(above), np.asarray(tied)
    ranks = np.arange(1, (ranks_up_to or n_negatives + 1) + 1)[None, :]  # the ranks the positive could take
    possible = (ranks > above[:, None]) & (ranks <= (above + tied + 1)[:, None])  # its equally likely ranks
    weight = possible / (tied + 1)[:, None]
    out = {}
    for k in ks:
        within = ranks <= k
        out[f"Recall@{k}"] = (weight * within).sum(1)
        out[f"MRR@{k}"] = (weight * within / ranks).sum(1)
        out[f"NDCG@{k}"] = (weight * within / np.log2(ranks + 1)).sum(1)  # one relevant item: IDCG = 1
    out["AUC"] = (n_negatives - above - 0.5 * tied) / n_negatives
    return out


def bootstrap(values, n_resamples, seed):
    """(mean, low, high): the mean over users and its 95% percentile interval over user resamples."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_resamples, len(values)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(values.mean()), float(low), float(high)


def summarize_metrics(scores, n_resamples, seed):
    """{metric: [mean, low, high]} for one method's [users, candidates] scores."""
    return summary_of(per_user_metrics(scores), n_resamples, seed)


def summary_of(per_user, n_resamples, seed):
    """{metric: [mean, low, high]} for one method's {metric: per-user values}."""
    return {name: list(bootstrap(v, n_resamples, seed)) for name, v in per_user.items()}


def paired(scores_a, scores_b, n_resamples, seed):
    """{metric: [mean of a - b, low, high]}: the same users resampled for both methods, so the interval is
    that of the difference, much narrower than comparing two separate intervals."""
    return paired_of(per_user_metrics(scores_a), per_user_metrics(scores_b), n_resamples, seed)


def paired_of(a, b, n_resamples, seed):
    """paired() for two methods' {metric: per-user values}."""
    return {name: list(bootstrap(a[name] - b[name], n_resamples, seed)) for name in a}


def method_results(per_user, n_users, n_resamples, seed):
    """{method: {"users", "metrics", "paired": {other method: differences}}} from {method: {metric: per-user values}}:
    each method's metrics with intervals and its paired differences from every other."""
    return {name: {"users": n_users, "metrics": summary_of(m, n_resamples, seed),
                   "paired": {ref: paired_of(m, per_user[ref], n_resamples, seed) for ref in per_user if ref != name}}
            for name, m in per_user.items()}

# ---- Baselines: cheap rankers on exactly the same candidates ----


def random_scores(users):
    """All candidates equal: under the tie rule this is exactly a random ranking's expected metrics."""
    return np.zeros((len(users), 1 + len(users[0]["negatives"])))


def popularity_scores(users, train_users):
    """How often each candidate occurs in the training users' histories."""
    counts = Counter(i for u in train_users for i in u["history"])
    return np.array([[counts[c] for c in [u["target"]] + u["negatives"]] for u in users], dtype=np.float64)


def words(text):
    return re.findall(r"\w+", text.lower())


def tfidf_vectorizer(items):
    """vector(text): the text's unit TF-IDF vector {word: weight}. Document frequencies are counted over every
    item of items.jsonl; a word that no item has (a summary's own words) gets the same idf with df 0."""
    df = Counter(w for text in items.values() for w in set(words(text)))
    n_docs = len(items)

    def vector(text):
        tf = Counter(words(text))
        return unit({w: c * math.log((1 + n_docs) / (1 + df[w])) for w, c in tf.items()})
    return vector


def unit(v):
    norm = math.sqrt(sum(x * x for x in v.values())) or 1.0  # a text of no words stays the zero vector
    return {w: x / norm for w, x in v.items()}


def cosine_scores(users, items, vector, queries):
    """[users, candidates]: the cosine between each candidate's TF-IDF vector and its user's query (a unit vector)."""
    return np.array([[sum(x * query.get(w, 0.0) for w, x in vector(items[c]).items())
                      for c in [u["target"]] + u["negatives"]] for u, query in zip(users, queries)])


def history_profiles(users, items, vector):
    """Each user's query for text similarity: the unit sum of the history items' (unit) TF-IDF vectors."""
    profiles = []
    for u in users:
        profile = Counter()
        for item in u["history"]:
            profile.update(vector(items[item]))
        profiles.append(unit(profile))
    return profiles


def summary_queries(users, summaries, vector, summaries_path="the summaries file"):
    """Each user's query for the summary probe: the TF-IDF vector of the preference summary."""
    missing = [u["user"] for u in users if u["user"] not in summaries]
    if missing:
        raise ValueError(f"user {missing[0]!r} has no summary in {summaries_path} ({len(missing)} of the "
                         f"{len(users)} users have none); summarize every user of the split first")
    return [vector(summaries[u["user"]]) for u in users]


def tfidf_scores(users, items):
    """Text similarity from the raw history: the cosine between the candidate's TF-IDF vector and the sum of
    the history items' (unit) vectors. The counterpart of summary_tfidf_scores, which ranks the same way from
    the summary instead: what the history's own words carry, with no LLM."""
    vector = tfidf_vectorizer(items)
    return cosine_scores(users, items, vector, history_profiles(users, items, vector))


def summary_tfidf_scores(users, items, summaries, summaries_path="the summaries file"):
    """Text similarity from the summary alone (a probe, no LLM recommender): the cosine between the candidate's
    TF-IDF vector and the TF-IDF vector of the user's preference summary. Beside tfidf_scores it shows how much
    of the ranking the summary's words carry, compared with the history's."""
    vector = tfidf_vectorizer(items)
    return cosine_scores(users, items, vector, summary_queries(users, summaries, vector, summaries_path))

# ---- Full ranking: the target against every item of items.jsonl but the user's history ----
# The cheap rankers afford it (one score per item); baselines.py --full-ranking writes the conventional models'
# ranks.jsonl. The LLM recommender, one forward pass per candidate, does not (docs/stages.md says what it would cost).

FULL_KS = (10, 20, 50)


def catalogue_counts(row, target, excluded):
    """(above, tied, negatives) of one user's scores of the whole catalogue: of the items that are neither the
    target (an index into row) nor among `excluded` (indices: the user's history; repeats are fine), how many score
    higher than the target, how many exactly the same, and how many there are. The one counting rule of full
    ranking, here and in baselines.py --full-ranking."""
    allowed = np.ones(len(row), dtype=bool)
    allowed[np.asarray(excluded, dtype=np.int64)] = False
    allowed[target] = False
    others = row[allowed]
    return int((others > row[target]).sum()), int((others == row[target]).sum()), int(allowed.sum())


def full_ranks(users, items, rows):
    """(above, tied, negatives) arrays, one value per user (catalogue_counts). rows: each user's scores of every
    item, in items.jsonl's order."""
    index = {item: j for j, item in enumerate(items)}
    counts = [catalogue_counts(row, index[u["target"]], [index[i] for i in u["history"]])
              for u, row in zip(users, rows)]
    return tuple(np.array(column) for column in zip(*counts))


def cosine_rows(items, vector, queries):
    """Each query's cosine with every item of items.jsonl (in its order), through an inverted index of the items'
    TF-IDF vectors: a query touches only the items that share one of its words."""
    postings = {}
    for j, text in enumerate(items.values()):
        for w, x in vector(text).items():
            postings.setdefault(w, ([], []))
            postings[w][0].append(j)
            postings[w][1].append(x)
    postings = {w: (np.array(js), np.array(xs)) for w, (js, xs) in postings.items()}
    for query in queries:
        row = np.zeros(len(items))
        for w, q in query.items():
            if w in postings:
                js, xs = postings[w]
                row[js] += q * xs  # each item once per word
        yield row


def full_ranking_rows(users, items, train_users, probes):
    """{ranker: rows for full_ranks}: the summary probes ({name: summaries}), text similarity, popularity and random,
    each against the whole catalogue."""
    vector = tfidf_vectorizer(items)
    counts = Counter(i for u in train_users for i in u["history"])
    rankers = {name: cosine_rows(items, vector, summary_queries(users, summaries, vector))
               for name, summaries in probes.items()}
    rankers["text similarity (TF-IDF)"] = cosine_rows(items, vector, history_profiles(users, items, vector))
    popularity = np.array([counts[i] for i in items], dtype=np.float64)
    rankers["popularity"] = (popularity for _ in users)
    rankers["random"] = (np.zeros(len(items)) for _ in users)  # every item tied: a random order's expectation
    return rankers


def read_ranks(folder, users):
    """(name, (above, tied, negatives)) from a baselines.py --full-ranking folder: its full.json's name and its
    ranks.jsonl, checked against the users and their targets."""
    with open(os.path.join(folder, "full.json")) as f:
        name = json.load(f)["name"]
    records = common.read_appended(os.path.join(folder, "ranks.jsonl"), "user")
    for u in users:
        if u["user"] not in records or records[u["user"]]["target"] != u["target"]:
            raise ValueError(f"{folder}/ranks.jsonl: no rank of user {u['user']!r}'s target {u['target']!r}; "
                             f"was it ranked on other data? Run baselines.py --full-ranking on this data")
    return name, tuple(np.array([records[u["user"]][k] for u in users]) for k in ("above", "tied", "negatives"))


# ---- Files ----


def data_hash(data_dir, split):
    """sha256 over the split's users and the item texts: results are comparable when this matches."""
    h = hashlib.sha256()
    for name in (f"{split}.jsonl", "items.jsonl"):
        with open(os.path.join(data_dir, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def read_scores(paths):
    """{user: {"user", "candidates", "p"}} from scores files (a line cut short by a killed run is scored again)."""
    done = {}
    for path in paths:
        done.update(common.read_appended(path, "user"))
    return done


def scores_matrix(records, users):
    """[users, 21] scores in the users' order, checking each record ranks exactly the saved candidates."""
    rows = []
    for u in users:
        r = records[u["user"]]
        if r["candidates"] != [u["target"]] + u["negatives"]:
            raise ValueError(f"user {u['user']!r}: the scored candidates differ from the data's; was the data rebuilt?")
        rows.append(r["p"])
    return np.array(rows, dtype=np.float64)


def fmt(m):
    return f"{m[0]:.4f} [{m[1]:.3f}, {m[2]:.3f}]"


def results_table(methods, reference="random", cols=None):
    """Markdown: one row per method (metric, 95% interval), then each method's paired difference from the
    reference method on the same users."""
    cols = cols or [f"Recall@{k}" for k in KS] + [f"MRR@{k}" for k in KS] + ["NDCG@10", "AUC"]
    lines = ["| method | users | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for name, r in methods.items():
        lines.append(f"| {name} | {r['users']} | " + " | ".join(fmt(r["metrics"][c]) for c in cols) + " |")
    if reference in methods and len(methods) > 1:
        lines += ["", f"Paired difference from {reference} (same users, bootstrap 95% interval; an interval "
                  "that excludes 0 is a difference beyond the noise):", "",
                  "| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for name, r in methods.items():
            if name != reference and reference in r.get("paired", {}):
                d = r["paired"][reference]
                lines.append(f"| {name} − {reference} | " + " | ".join(
                    f"{d[c][0]:+.4f} [{d[c][1]:+.3f}, {d[c][2]:+.3f}]" for c in cols) + " |")
    return "\n".join(lines) + "\n"

# ---- Scoring with the LLM ----

@dataclass
class Scorer:
    """What scoring needs besides the model, the same for the base model and every adapter."""
    model_name: str
    tokenizer: object
    yes_no: tuple  # the token ids of the answers
    domain: str
    items: dict
    summaries: dict
    settings: dict  # recent, no_summary, tallrec, max_len: an adapter's come from its training config
    data_dir: str
    prefix_cache: bool

    def score(self, model, user):
        """(candidates, p, shortened): p for each of the user's 21 candidates, the true next item first."""
        s = self.settings
        summary, history = llm.recommender_inputs(user, self.items, self.summaries, recent=s["recent"],
                                                   use_summary=not (s["no_summary"] or s["tallrec"]),
                                                   whole_history=s["tallrec"])
        candidates = [user["target"]] + user["negatives"]
        texts = [llm.item_text(self.items, c, user["user"]) for c in candidates]
        prefix, suffixes, shortened = llm.fit_recommender_prompt(self.tokenizer, self.domain, summary, history,
                                                                  texts, s["max_len"])
        p = llm.score_candidates(model, self.tokenizer, prefix, suffixes, self.yes_no, self.prefix_cache)
        return candidates, p, shortened


def checkpoint_kind(folder):
    """"lora": a peft adapter (adapter_config.json), scored on the base model; "full": a whole fine-tuned model
    as train.py --lora none writes it, a plain Hugging Face folder (config.json, model.safetensors); else None.
    train.py's --out folder holds a config.json too, but no weights: it is neither."""
    if os.path.isfile(os.path.join(folder, "adapter_config.json")):
        return "lora"
    if os.path.isfile(os.path.join(folder, "config.json")) and glob.glob(os.path.join(folder, "model.safetensors*")):
        return "full"  # model.safetensors, or model.safetensors.index.json beside its shards
    return None


def adapters_of(paths):
    """Checkpoint folders, LoRA or full: a train.py --out folder stands for all its epoch_N checkpoints, in epoch
    order."""
    found = []
    for path in paths:
        if checkpoint_kind(path):
            found.append(path)
            continue
        epochs = sorted(glob.glob(os.path.join(path, "epoch_*")), key=lambda p: int(p.rsplit("_", 1)[1]))
        if not epochs:
            raise FileNotFoundError(f"{path}: neither a checkpoint (adapter_config.json, or config.json and "
                                    f"model.safetensors) nor a train.py folder with epoch_N checkpoints")
        for epoch in epochs:  # else it would be scored as the base model, under the checkpoint's name
            if not checkpoint_kind(epoch):
                raise FileNotFoundError(f"{epoch}: neither adapter_config.json nor config.json and model.safetensors; "
                                        f"is train.py still writing it? Pass the finished epoch folders instead")
        found += epochs
    return found


def training_config(adapter):
    """train.py's config.json in the folder above a checkpoint (OUT/epoch_N): the base model and the prompt
    settings it was trained with."""
    path = os.path.join(os.path.dirname(os.path.abspath(adapter)), "config.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def claim_folder(out_dir, run):
    """Scores already in out_dir are reused only when they come from the same model, adapter, prompt settings
    and data; anything else stops with a message instead of mixing two methods' scores."""
    path = os.path.join(out_dir, "scoring.json")
    if os.path.isfile(path):
        with open(path) as f:
            previous = json.load(f)
        if previous != json.loads(json.dumps(run)):
            raise SystemExit(f"{out_dir} holds scores of another run ({previous}); pass another --out or remove it")
    elif int(os.environ.get("RANK", 0)) == 0:  # written aside, then renamed: another rank never reads half a file
        with open(path + ".tmp", "w") as f:
            json.dump(run, f, indent=1)
        os.replace(path + ".tmp", path)


def score_split(base, adapter, scorer, split, users, out_dir, dtype="auto", quantize="none"):
    """[users, 21] scores of `users` with the base model, with the LoRA `adapter` on it, or with the full
    checkpoint `adapter` (loaded in `dtype` and `quantize` in place of the base model, and freed after), and
    how long it took (seconds, candidates per second and prompts shortened, for what this rank scored now).

    Each rank scores its share (every world_size-th user) that out_dir does not hold yet, and appends each
    user to its part file as soon as it is scored; rank 0 then merges the parts into out_dir/scores.jsonl
    in the users' order, which every rank reads."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    os.makedirs(out_dir, exist_ok=True)
    claim_folder(out_dir, {"model": scorer.model_name, "adapter": os.path.abspath(adapter) if adapter else None,
                           "prompt": scorer.settings, "data_hash": data_hash(scorer.data_dir, split)})
    kind = checkpoint_kind(adapter) if adapter else None
    if kind == "full":
        model = llm.load_model(adapter, dtype=dtype, quantize=quantize).eval()
    elif kind == "lora":
        model = PeftModel.from_pretrained(base, adapter).eval()
    else:
        assert not adapter, f"{adapter}: not a checkpoint"  # adapters_of has checked it: never the base in its name
        model = base
    scored = read_scores(glob.glob(os.path.join(out_dir, "scores*.jsonl")))
    mine = users[rank::world]
    todo = [u for u in mine if u["user"] not in scored]
    n_cand = 1 + len(users[0]["negatives"])
    bar = common.progress(len(todo) * n_cand, f"score {split} {os.path.basename(adapter or 'base')}", "candidates",
                        show=rank == 0)
    t0, shortened = time.time(), 0
    fd = common.open_append(os.path.join(out_dir, f"scores.rank{rank}.jsonl"))
    for u in todo:
        candidates, p, cut = scorer.score(model, u)
        common.append(fd, {"user": u["user"], "candidates": candidates, "p": p})
        shortened += cut
        bar.update(n_cand)
    os.close(fd)
    bar.close()
    seconds = time.time() - t0
    if kind == "lora":
        model.unload()  # the LoRA layers out again: `base` is the plain base model once more
    elif kind == "full":
        del model
        gc.collect()  # this checkpoint's memory back before the next one loads: two need not fit at once
    if world > 1:
        dist.barrier()
    if rank == 0:
        parts = sorted(glob.glob(os.path.join(out_dir, "scores.rank*")))
        common.merge_parts(os.path.join(out_dir, "scores.jsonl"), parts, "user", [u["user"] for u in users])
    if world > 1:
        dist.barrier()
    n = len(todo) * n_cand
    common.print0(f"{split} {adapter or 'base model'}: " + (f"rank 0 of {world}: " if world > 1 else "")
                + f"scored {len(todo)} users ({n} candidates) in {seconds:.1f} s, {n / max(seconds, 1e-9):.1f} "
                f"candidates/s; {len(mine) - len(todo)} were already scored; {shortened} prompts shortened to fit "
                f"{scorer.settings['max_len']} tokens")
    scores = scores_matrix(read_scores([os.path.join(out_dir, "scores.jsonl")]), users)
    return scores, {"seconds": seconds, "candidates_per_second": n / max(seconds, 1e-9), "shortened": shortened}


def evaluate_model(args, users, items, domain):
    """The recommender's scores on --split: with several adapters, each is scored on val first and the best
    is kept (the authors' rule: the best Recall@3 + @5 + @10). Runs on every rank; returns the table row."""
    adapters = adapters_of(args.adapter) if args.adapter else [None]
    train_cfg = training_config(adapters[0]) if adapters[0] else {}
    settings = {k: train_cfg.get(k, getattr(args, k)) for k in llm.PROMPT_FLAGS}
    for k in llm.PROMPT_FLAGS:  # the prompt the adapter learned on is the prompt it is scored on
        if settings[k] != getattr(args, k):
            common.print0(f"NOTE: --{k.replace('_', '-')} {settings[k]} from {adapters[0]}'s training config "
                          f"overrides --{k.replace('_', '-')} {getattr(args, k)}")
    model_name = args.model or train_cfg.get("model") or llm.DEFAULT_MODEL
    summaries = {}
    if not (settings["no_summary"] or settings["tallrec"]):
        if not args.summaries:
            raise SystemExit("--summaries is needed: the prompt has a preference summary "
                             "(or pass --tallrec / --no-summary)")
        summaries = data.load_summaries(args.summaries)
    tokenizer = llm.load_tokenizer(model_name)  # a full checkpoint's too: train.py saves the weights only
    # the zero-shot run and LoRA adapters need the base model; a full checkpoint is loaded in its place
    needs_base = any(a is None or checkpoint_kind(a) == "lora" for a in adapters)
    base = llm.load_model(model_name, dtype=args.dtype, quantize=args.quantize).eval() if needs_base else None
    scorer = Scorer(model_name, tokenizer, llm.answer_token_ids(tokenizer), domain, items, summaries, settings,
                    args.data, not args.no_prefix_cache)

    chosen, selection = adapters[0], {}
    if len(adapters) > 1:
        val_users = data.load_split(args.data, "val")[:args.limit or None]
        for adapter in adapters:
            val_dir = os.path.join(args.out, "val", os.path.basename(adapter))
            scores, _ = score_split(base, adapter, scorer, "val", val_users, val_dir, args.dtype, args.quantize)
            selection[adapter] = {m: float(v.mean()) for m, v in per_user_metrics(scores).items()
                                  if m.startswith("Recall")}
            common.print0(f"val {adapter}: Recall@3+@5+@10 = {sum(selection[adapter].values()):.4f}")
        chosen = max(adapters, key=lambda a: sum(selection[a].values()))  # the first of equals
        common.print0(f"chosen on val: {chosen}")
    scores, timing = score_split(base, chosen, scorer, args.split, users, args.out, args.dtype, args.quantize)
    name = args.name or (("TALLRec mode" if settings["tallrec"] else "LLM-TRSR") if chosen else "zero-shot base model")
    return {"name": name, "scores": scores, "model": model_name, "adapter": chosen, "selection": selection,
            "prompt": settings, **timing}


# ---- Main ----

def main(args):
    rank, _, _, _ = llm.init_distributed()
    os.makedirs(args.out, exist_ok=True)
    common.print0("config:", json.dumps(vars(args)))
    domain = data.load_domain(args.data)
    items = data.load_items(args.data)
    users = data.load_split(args.data, args.split)[:args.limit or None]
    if not users:
        raise SystemExit(f"{args.data}/{args.split}.jsonl has no users")

    probe_files = {}  # row name: summaries file
    for spec in args.probe_summaries:
        name, _, path = spec.partition("=")
        if not (name and path):
            raise SystemExit(f"--probe-summaries takes NAME=PATH, e.g. hierarchical=runs/mind/"
                             f"summaries-hierarchical.jsonl; got {spec!r}")
        probe_files[f"summary probe: {name} (TF-IDF)"] = path
    if args.full_ranking:
        if not args.baselines_only:
            raise SystemExit("--full-ranking needs --baselines-only: the LLM recommender runs one forward pass per "
                             "candidate, and cannot afford every item of the catalogue (docs/stages.md)")
        write_full_ranking(args, users, items, {name: data.load_summaries(p) for name, p in probe_files.items()})
        return

    # the summary probes are ranked first, so that a file without some user stops the run now, not after
    # the scoring; the other ranks need none of it (a failed rank 0 ends a torchrun job)
    probes = {}
    if rank == 0:
        for name, path in probe_files.items():
            probes[name] = summary_tfidf_scores(users, items, data.load_summaries(path), path)

    # the table's rows, in order: the model, the included runs, the summary probes, then the baselines
    methods, model_row = {}, None
    if not args.baselines_only:
        model_row = evaluate_model(args, users, items, domain)
        methods[model_row["name"]] = model_row["scores"]
    if rank == 0:
        for other in args.include:
            with open(os.path.join(other, "results.json")) as f:
                r = json.load(f)
            if r["data_hash"] != data_hash(args.data, args.split) or r["users"] != len(users):
                raise ValueError(f"{other}: evaluated on other data or users than {args.data} {args.split} "
                                 f"(--limit {args.limit})")
            methods[r["name"]] = scores_matrix(read_scores([os.path.join(other, "scores.jsonl")]), users)
        methods.update(probes)
        if args.baselines or args.baselines_only:
            methods["text similarity (TF-IDF)"] = tfidf_scores(users, items)
            methods["popularity"] = popularity_scores(users, data.load_split(args.data, "train"))
            methods["random"] = random_scores(users)
        write_results(args, users, methods, model_row)
    llm.teardown_distributed()


def write_results(args, users, methods, model_row):
    """Each method's metrics with intervals and its paired differences from every other, as results.json
    and as the results.md table."""
    results = method_results({name: per_user_metrics(scores) for name, scores in methods.items()}, len(users),
                             args.bootstrap, args.seed)
    table = results_table(results)
    common.print0(table)
    summary = {"name": model_row["name"] if model_row else "baselines", "split": args.split, "users": len(users),
               "data": args.data, "data_hash": data_hash(args.data, args.split), "config": vars(args),
               "tie_rule": "expected value over a uniformly random order of tied candidates", "methods": results,
               **({k: model_row[k] for k in ("model", "adapter", "selection", "prompt", "seconds",
                                             "candidates_per_second", "shortened")} if model_row else {})}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(f"{args.split}, {len(users)} users, 1 positive + {len(users[0]['negatives'])} negatives each; "
                f"mean and 95% bootstrap interval over users ({args.bootstrap} resamples, seed {args.seed})\n\n"
                + table)
    common.print0(f"wrote {args.out}/results.json, results.md, scores.jsonl")


def write_full_ranking(args, users, items, probes):
    """--full-ranking: the included baselines.py ranks and the cheap rankers against the whole catalogue, as
    results.json and the results.md table (Recall, MRR and NDCG at 10, 20 and 50)."""
    t0 = time.time()
    counts = dict(read_ranks(folder, users) for folder in args.include)
    rows = full_ranking_rows(users, items, data.load_split(args.data, "train"), probes)
    counts.update({name: full_ranks(users, items, r) for name, r in rows.items()})
    n_negatives = counts["random"][2]
    for name, (_, _, negatives) in counts.items():  # the same candidates for every row: checked, not assumed
        if not np.array_equal(negatives, n_negatives):
            raise ValueError(f"{name}: ranked against other items than the catalogue less each user's history")
    per_user = {name: rank_metrics(*c, FULL_KS, ranks_up_to=max(FULL_KS)) for name, c in counts.items()}
    results = method_results(per_user, len(users), args.bootstrap, args.seed)
    cols = [f"{m}@{k}" for m in ("Recall", "MRR", "NDCG") for k in FULL_KS]
    table = results_table(results, cols=cols)
    common.print0(table)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"name": "full ranking", "split": args.split, "users": len(users), "catalogue": len(items),
                   "candidates": "every item of items.jsonl but the user's history", "ks": FULL_KS,
                   "data": args.data, "data_hash": data_hash(args.data, args.split), "config": vars(args),
                   "tie_rule": "expected value over a uniformly random order of tied candidates",
                   "methods": results}, f, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(f"{args.split}, {len(users)} users, the target ranked against every item of items.jsonl but the "
                f"user's history ({int(n_negatives.mean()):,} on average); mean and 95% bootstrap interval over "
                f"users ({args.bootstrap} resamples, seed {args.seed})\n\n" + table)
    common.print0(f"full ranking of {len(users)} users against {len(items):,} items in {time.time() - t0:.1f} s: "
                  f"wrote {args.out}/results.json, results.md")


if __name__ == "__main__":
    main(parser.parse_args())
