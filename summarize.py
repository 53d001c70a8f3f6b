"""Summarize each user's history into one preference summary with a frozen LLM (paper §4.1-4.2).

The history is cut into blocks of 5 items, oldest first. hierarchical: summarize every block, then merge
the block summaries into one (all at once as in the paper, or --fan-in k at a time, level by level).
recurrent: summarize the first block, then update the summary with each next block.

$ python summarize.py --data data/mind --paradigm hierarchical --out runs/mind/summaries-hierarchical.jsonl
$ python summarize.py --data data/mind --paradigm recurrent --out runs/mind/summaries-recurrent.jsonl --limit 20
$ torchrun --standalone --nproc_per_node 4 summarize.py --data data/mind --paradigm recurrent \
      --out runs/mind/summaries-recurrent.jsonl --model upstage/llama-30b-instruct-2048 --quantize 8bit --format paper

Users run in lockstep: the block prompts of a batch of users go through the model together, then all
their merges (or all their step-t updates), left padded, greedy (or sampled with --sample, seeded). Every
generation is cached by its content (model, exact prompt text, generation settings) in an append-only
JSON-lines file beside --out, written as it goes. So a run killed at any point redoes nothing it had
finished, a second run generates nothing, and when a user's history grows by a block only the new work
runs (recurrent: one update; hierarchical: the new block and the merges above it). Paradigms share the
cache: recurrent's first step is hierarchical's first block summary.

Writes --out, one line per user {"user", "paradigm", "summary", "steps": [every generated summary, in
order]}, and beside it the same name ending in .meta.json instead of .jsonl: config, model, run counts.
Under torchrun each rank takes users by stride; rank 0 merges the ranks' parts into --out.
"""
import argparse
import hashlib
import inspect
import json
import os
import re
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from transformers import DynamicCache, GenerationConfig, StaticCache

import common
import data
import llm
import prompts

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--data", required=True, help="folder written by data.py (items.jsonl, <split>.jsonl, meta.json)")
parser.add_argument("--paradigm", required=True, help="hierarchical or recurrent (the PARADIGMS table below)")
parser.add_argument("--out", required=True, help="summaries file to write (JSON lines)")
parser.add_argument("--splits", default="train,val,test", help="comma-separated splits whose users to summarize")
parser.add_argument("--limit", type=int, default=0, help="only the first N users of each split (0: all)")
parser.add_argument("--model", default=llm.DEFAULT_MODEL,
                    help="hub id, local folder or .gguf file; default: bundled SmolLM2-135M-Instruct")
parser.add_argument("--format", choices=prompts.SUM_FORMATS, default=None,
                    help="prompt frame: the tokenizer's chat template, or the paper's '### User:' text "
                         "(default: chat when the tokenizer has a template, else paper)")
parser.add_argument("--fan-in", type=int, default=0,
                    help="hierarchical: merge this many summaries at a time (0: all at once, as the paper)")
parser.add_argument("--batch-size", type=int, default=16, help="prompts per forward pass, and users in lockstep")
parser.add_argument("--max-new-tokens", type=int, default=128)
parser.add_argument("--static-cache", action="store_true",
                    help="pre-allocate the key/value cache instead of growing it (no faster on 2 CPU cores)")
parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                    help="auto: bf16 on GPU, fp32 on CPU")
parser.add_argument("--quantize", default="none", choices=["none", "8bit", "4bit"],
                    help="load the summarizer through bitsandbytes (paper: 8-bit)")
parser.add_argument("--cache", default=None, help="generation cache file (default: summarize_cache.jsonl beside --out)")
parser.add_argument("--seed", type=int, default=0, help="seeds sampling (--sample); greedy decoding draws nothing")
# Greedy is the default, so a summary is a function of its prompt. The authors sampled with transformers'
# defaults (do_sample=True and nothing else: temperature 1, top-k 50, top-p 1), which --sample reproduces.
parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding, as the authors did")
parser.add_argument("--temperature", type=float, default=1.0, help="with --sample")
parser.add_argument("--top-k", type=int, default=50, help="with --sample (0: no top-k)")
parser.add_argument("--top-p", type=float, default=1.0, help="with --sample")


# ---- Paradigms ----
# A paradigm is a generator over one user's blocks (lists of item texts, oldest first). It yields a list
# of prompts (rendered by prompts.py, without the frame) and receives their summaries, in the same order;
# what it returns is the user's summary. Yielding lists is what lets the driver below run many users in
# lockstep, while each paradigm still reads as the plain procedure of the paper. Options of its own (such as
# hierarchical's fan_in) are keyword arguments, filled from the flags of the same name.

def hierarchical(blocks, domain, fan_in=0):
    """§4.1: summarize each block, then merge the summaries (the paper: all of them in one prompt)."""
    summaries = yield [prompts.render_block(domain, block) for block in blocks]
    return (yield from merge(summaries, fan_in or len(summaries)))


def merge(summaries, fan_in):
    """Merge in groups of fan_in, oldest first, and recurse on the merged level until one summary is left."""
    if len(summaries) == 1:
        return summaries[0]
    assert fan_in >= 2, f"--fan-in must be 0 (all at once) or at least 2, got {fan_in}"
    groups = [summaries[i:i + fan_in] for i in range(0, len(summaries), fan_in)]
    single = groups.pop() if len(groups[-1]) == 1 else []  # a last group of one has nothing to merge: it goes up
    merged = yield [prompts.render_merge(group) for group in groups]
    return (yield from merge(merged + single, fan_in))


def recurrent(blocks, domain):
    """§4.2: summarize the first block, then update the summary with each next block."""
    (summary,) = yield [prompts.render_block(domain, blocks[0])]
    for block in blocks[1:]:
        (summary,) = yield [prompts.render_update(domain, summary, block)]
    return summary


# Adding a paradigm: write a generator like the two above and add it here; --paradigm picks it by name.
PARADIGMS = {
    "hierarchical": hierarchical,
    "recurrent": recurrent,
}


def paradigm_options(paradigm, args):
    """The keyword options `paradigm` takes, from the flags of the same name (--fan-in -> fan_in)."""
    taken = list(inspect.signature(paradigm).parameters)[2:]  # after blocks and domain
    if args.fan_in and "fan_in" not in taken:
        raise SystemExit(f"--fan-in: the {args.paradigm} paradigm takes no fan_in")
    return {name: getattr(args, name) for name in taken if hasattr(args, name)}


@dataclass
class Pending:
    """A user part-way through its paradigm."""
    job: int  # index into the jobs
    paradigm: object  # the user's running generator
    prompts: list  # what it waits on
    received: list = field(default_factory=list)  # every summary it was sent, in order


def lockstep(jobs, start, summarizer, pool):
    """Run up to `pool` users' paradigm generators side by side: each round gathers every prompt the
    pending users wait on, asks `summarizer` for all of them at once, and sends each user its answers. A finished
    user makes room for the next, so the batches stay full. Yields (job index, summary, steps) as users
    finish; steps are every summary the user's generator received, in order."""
    jobs, pending = iter(enumerate(jobs)), []
    while True:
        while len(pending) < pool and (job := next(jobs, None)) is not None:
            paradigm = start(job[1])
            pending.append(Pending(job[0], paradigm, next(paradigm)))
        if not pending:
            return
        answers = iter(summarizer([prompt for user in pending for prompt in user.prompts]))
        still = []
        for user in pending:
            got = [next(answers) for _ in user.prompts]
            user.received += got
            try:
                user.prompts = user.paradigm.send(got)
                still.append(user)
            except StopIteration as finished:
                yield user.job, finished.value, user.received
        pending = still


# ---- Generation and its cache ----

def cache_key(model_id, text, settings):
    """Content address of one generation: the same model, prompt text and settings give the same output."""
    return hashlib.sha256(json.dumps([model_id, text, settings], ensure_ascii=False).encode()).hexdigest()


def generation_config(model, tokenizer, max_new_tokens, fmt="chat", sample=None):
    """Greedy, or sampling with sample = {"temperature", "top_k", "top_p"}, ending at the model's or the
    tokenizer's end-of-turn token. In the paper's frame, where nothing but the text marks a turn, also at
    "###": stopping there saves the tokens of a hallucinated next turn. (Only there: transformers prepares
    a stop string by walking the whole vocabulary once per process, ~15-45 s for SmolLM2's 49k tokens.)
    Never compiled: with --static-cache, transformers would otherwise compile the model on GPUs, unmeasured."""
    eos = model.generation_config.eos_token_id
    eos = sorted({tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos] if eos is not None else [])})
    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=sample is not None, **(sample or {}),
                            eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                            stop_strings=["###"] if fmt == "paper" else None, disable_compile=True)


def shared_head(rows):
    """The longest run of token ids that every row starts with (rows: lists of ids)."""
    n = min(map(len, rows))
    for j in range(n):
        if any(row[j] != rows[0][j] for row in rows):
            return rows[0][:j]
    return rows[0][:n]


@torch.no_grad()
def generate(model, tokenizer, texts, gen_config, add_special_tokens, share_head=True, static_cache=False):
    """Continuations of a batch of prompt texts: (output texts, tokens generated each).

    The rows' shared head (the chat template's system line and the instruction, 68 of the ~215 tokens of a block
    prompt, 186 of ~333 of an update) runs once, and its keys and values are copied into every row's cache;
    each row's own tail follows, padded on its left, between head and tail, where the attention mask hides the
    pads and positions go on from the head as if there were none. So every row sees exactly its own token ids
    at their own positions, as with plain left padding. static_cache pre-allocates the cache for prompt and new
    tokens (transformers' StaticCache) instead of growing it by one copy per step; on 2 CPU cores that measured
    0.92-1.04x (bench.py summarize_cache), so it is --static-cache, off by default."""
    ids = [tokenizer(t, add_special_tokens=add_special_tokens)["input_ids"] for t in texts]
    head = shared_head(ids) if share_head and len(ids) > 1 else []
    head = head[:min(map(len, ids)) - 1]  # every row keeps at least one token of its own to start generating from
    tails = [row[len(head):] for row in ids]
    width, pad = max(map(len, tails)), tokenizer.pad_token_id
    input_ids = torch.tensor([head + [pad] * (width - len(tail)) + tail for tail in tails])
    mask = torch.tensor([[1] * len(head) + [0] * (width - len(tail)) + [1] * len(tail) for tail in tails])
    input_ids, mask = input_ids.to(model.device), mask.to(model.device)
    kwargs = {}
    if head or static_cache:
        cache = (StaticCache(config=model.config, max_cache_len=input_ids.shape[1] + gen_config.max_new_tokens)
                 if static_cache else DynamicCache(config=model.config))
        if head:
            prefix = model(input_ids[:1, :len(head)], use_cache=True, logits_to_keep=1).cache
            for layer, done in zip(cache.layers, prefix.layers):
                layer.update(done.keys.expand(len(ids), -1, -1, -1), done.values.expand(len(ids), -1, -1, -1))
        kwargs["cache"] = cache
    out = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=gen_config, tokenizer=tokenizer,
                         **kwargs)
    outputs, counts = [], []
    stop = {pad, *gen_config.eos_token_id}
    for row in out[:, input_ids.shape[1]:].tolist():
        # a row ends at its first eos; what follows is padding while the other rows finish
        n = next((j for j, t in enumerate(row) if t in stop), len(row))
        outputs.append(tokenizer.decode(row[:n], skip_special_tokens=False))
        counts.append(n)
    return outputs, counts


def clean(output, markers, ran_out=False):
    """The summary in a raw output: cut where the model starts a new turn ('### User:', a special token
    such as <|im_start|>) and strip. An output that ran out of new tokens is cut back to its last full
    sentence, if it has one, so a later prompt never quotes half a word. If nothing is left, the summary
    is prompts.EMPTY_SUMMARY."""
    for marker in markers:
        output = output.split(marker, 1)[0]
    output = output.strip()
    ends = list(re.finditer(r"(?<!\d)[.!?](?=\s|$)", output))  # "2. " numbers a list item, it ends nothing
    if ran_out and ends:
        output = output[:ends[-1].end()]
    return output or prompts.EMPTY_SUMMARY


class CachedLLM:
    """The summarizer as lockstep's `summarizer`: a list of prompts in, their summaries out. Cached generations
    come from the cache file; the rest are generated in batches of `batch_size` prompts of similar length (less
    padding), and each is appended to the cache file as soon as it exists. Counts what it did in `stats`.

    model_name: as the user gave it (a folder counts by its absolute path); sample: None for greedy decoding, or
    {"temperature", "top_k", "top_p"} with the seed that draws them."""

    def __init__(self, model, tokenizer, model_name, fmt, cache_path, bar, batch_size=16, max_new_tokens=128,
                 quantize="none", static_cache=False, sample=None, seed=0):
        self.model, self.tokenizer, self.fmt, self.bar = model, tokenizer, fmt, bar
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.static_cache, self.sampled, self.seed = static_cache, sample is not None, seed
        # the chat template writes its own special tokens; the paper's frame is plain text after the usual BOS
        self.add_special_tokens = fmt == "paper"
        self.gen_config = generation_config(model, tokenizer, max_new_tokens, fmt, sample)
        self.markers = ["###", *(t for t in tokenizer.all_special_tokens if t)]
        self.model_id = os.path.abspath(model_name) if os.path.exists(model_name) else model_name
        self.settings = {"max_new_tokens": max_new_tokens, "do_sample": sample is not None,
                         "dtype": str(model.dtype).removeprefix("torch."), "quantize": quantize}
        if static_cache:  # the same arithmetic over a longer, masked cache: float rounding may differ
            self.settings["static_cache"] = True
        if sample:  # a sampled summary is one draw: cached under the seed that drew it, so --seed 1 draws anew
            self.settings.update(sample, seed=seed)
        self.cache = common.read_appended(cache_path, "key")
        self.cache_fd = common.open_append(cache_path)
        self.stats = dict(users=0, requests=0, generated=0, tokens=0, gen_seconds=0.0, summary_tokens=0,
                          history_tokens=0, empty=0)

    def __call__(self, contents):
        texts = [prompts.render_frame(c, self.fmt, self.tokenizer) for c in contents]
        keys = [cache_key(self.model_id, t, self.settings) for t in texts]
        todo = sorted({k: t for k, t in zip(keys, texts) if k not in self.cache}.items(), key=lambda kt: len(kt[1]))
        for b in range(0, len(todo), self.batch_size):
            batch = todo[b:b + self.batch_size]
            self.generate([k for k, _ in batch], [t for _, t in batch])
        self.stats["requests"] += len(texts)
        summaries = [clean(self.cache[k]["output"], self.markers,
                           ran_out=self.cache[k]["tokens"] >= self.max_new_tokens) for k in keys]
        self.stats["empty"] += sum(s == prompts.EMPTY_SUMMARY for s in summaries)
        return summaries

    def generate(self, keys, texts):
        t0 = time.time()
        if self.sampled:  # each batch's draws depend on the seed and its prompts only, not on what ran before
            torch.manual_seed(int(hashlib.sha256((str(self.seed) + "".join(keys)).encode()).hexdigest()[:15], 16))
        outputs, counts = generate(self.model, self.tokenizer, texts, self.gen_config, self.add_special_tokens,
                                   static_cache=self.static_cache)
        self.stats["gen_seconds"] += time.time() - t0
        for k, output, n in zip(keys, outputs, counts):
            self.cache[k] = {"key": k, "output": output, "tokens": n}
            common.append(self.cache_fd, self.cache[k])
        self.stats["generated"] += len(keys)
        self.stats["tokens"] += sum(counts)
        self.bar.set_postfix_str(f"{self.stats['tokens'] / max(self.stats['gen_seconds'], 1e-9):.1f} tok/s, "
                                 f"{self.stats['generated']} generated")


# ---- Main ----

def load_users(data_dir, splits, limit, items):
    """The users of `splits` (each once, in order; the first `limit` of each split, 0: all) and their histories,
    checked against items.jsonl."""
    users, seen = [], {}
    for split in splits:
        path = os.path.join(data_dir, f"{split}.jsonl")
        for record in data.load_split(data_dir, split)[:limit or None]:
            if not record.get("history"):
                raise ValueError(f"{path}: user {record.get('user')!r} has no history to summarize")
            missing = [i for i in record["history"] if i not in items]
            if missing:
                raise ValueError(f"{path}: user {record['user']!r}: history items {missing[:5]} are not in "
                                 f"{os.path.join(data_dir, 'items.jsonl')}")
            if record["user"] in seen:  # one summary per user: the same user twice must mean the same history
                if seen[record["user"]] != record["history"]:
                    raise ValueError(f"{path}: user {record['user']!r} appears again with another history")
                continue
            seen[record["user"]] = record["history"]
            users.append(record)
    return users


def main(args):
    if args.paradigm not in PARADIGMS:
        parser.error(f"--paradigm must be one of {sorted(PARADIGMS)}, got {args.paradigm!r}")
    paradigm = PARADIGMS[args.paradigm]
    options = paradigm_options(paradigm, args)
    config = vars(args)
    rank, _, world_size, device = llm.init_distributed()
    torch.manual_seed(args.seed)
    common.print0(f"config: {json.dumps(config)}")

    # users and their blocks of item texts; under torchrun each rank takes every world_size-th user
    domain = data.load_domain(args.data)
    items = data.load_items(args.data)
    users = load_users(args.data, args.splits.split(","), args.limit, items)
    mine = users[rank::world_size]
    jobs = [[[items[i] for i in block] for block in data.blocks(u["history"])] for u in mine]

    # the summarizer: frozen, eval mode, left padding so every row's prompt ends where generation starts
    tokenizer = llm.load_tokenizer(args.model)
    tokenizer.padding_side = "left"
    model = llm.load_model(args.model, dtype=args.dtype, quantize=args.quantize, device=device)
    model.eval().requires_grad_(False)
    # The chat template wherever there is one: SmolLM2-135M-Instruct's summaries in the paper's frame mostly
    # wrote about the task (README: Summarize). A model tuned on the paper's frame wants --format paper.
    fmt = args.format or ("chat" if tokenizer.chat_template else "paper")
    cache_path = args.cache or os.path.join(os.path.dirname(os.path.abspath(args.out)), "summarize_cache.jsonl")
    bar = common.progress(len(mine), f"summarize {args.paradigm}", "users", show=rank == 0)
    sample = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p} if args.sample else None
    summarizer = CachedLLM(model, tokenizer, args.model, fmt, cache_path, bar, args.batch_size, args.max_new_tokens,
                           args.quantize, args.static_cache, sample, args.seed)
    common.print0(f"{len(users)} users ({len(mine)} on this rank), {args.paradigm}, {domain} prompts, format {fmt}, "
                f"model {args.model} ({str(model.dtype)} on {device})")

    # this rank's users, each written to its part file as it finishes
    t0, stats = time.time(), summarizer.stats
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(f"{args.out}.rank{rank}", "w", encoding="utf-8") as part:
        for i, summary, steps in lockstep(jobs, lambda blocks: paradigm(blocks, domain, **options), summarizer,
                                          pool=args.batch_size):
            part.write(json.dumps({"user": mine[i]["user"], "paradigm": args.paradigm, "summary": summary,
                                   "steps": steps}, ensure_ascii=False) + "\n")
            part.flush()
            stats["users"] += 1
            stats["summary_tokens"] += len(tokenizer(summary, add_special_tokens=False)["input_ids"])
            stats["history_tokens"] += sum(map(len, tokenizer([t for b in jobs[i] for t in b],
                                                              add_special_tokens=False)["input_ids"]))
            bar.update(1)
    bar.close()
    os.close(summarizer.cache_fd)
    seconds = time.time() - t0

    if world_size > 1:  # totals over all ranks, then wait until every part is complete
        totals = torch.tensor([float(v) for v in stats.values()], dtype=torch.float64, device=device)
        dist.all_reduce(totals)
        stats = dict(zip(stats, totals.tolist()))
        dist.barrier()
    if rank == 0:  # one file in the order of the data, so --out is always whole
        common.merge_parts(args.out, [f"{args.out}.rank{r}" for r in range(world_size)], "user",
                           [u["user"] for u in users])
        write_meta(args, config, summarizer, fmt, domain, world_size, cache_path, stats, seconds)
    if world_size > 1:  # the ranks leave together: a rank that tore gloo down while rank 0 still wrote --out
        dist.barrier()  # could abort rank 0 at exit ("terminate called without an active exception")
    llm.teardown_distributed()
    return stats


def write_meta(args, config, summarizer, fmt, domain, world_size, cache_path, stats, seconds):
    """--out's .meta.json (config, model, settings, counts) and the run's one-line report."""
    n = max(stats["users"], 1)
    # gen_seconds is summed over ranks that ran side by side: their joint rate is tokens / (sum / ranks)
    stats.update(seconds=round(seconds, 1), mean_summary_tokens=round(stats["summary_tokens"] / n, 1),
                 mean_history_tokens=round(stats["history_tokens"] / n, 1),
                 tokens_per_second=round(stats["tokens"] * world_size / max(stats["gen_seconds"], 1e-9), 2))
    with open(os.path.splitext(args.out)[0] + ".meta.json", "w", encoding="utf-8") as f:
        json.dump({"config": config, "model_id": summarizer.model_id, "format": fmt, "domain": domain,
                   "settings": summarizer.settings, "world_size": world_size, "cache": cache_path, "stats": stats}, f,
                  indent=1)
    common.print0(f"summarized {int(stats['users'])} users in {seconds:.0f} s: {int(stats['requests'])} generations, "
                f"{int(stats['generated'])} new and {int(stats['requests'] - stats['generated'])} from the cache; "
                f"{int(stats['tokens'])} tokens at {stats['tokens_per_second']:.1f} tok/s; mean summary "
                f"{stats['mean_summary_tokens']:.0f} tokens vs {stats['mean_history_tokens']:.0f} tokens of history; "
                f"{int(stats['empty'])} empty outputs -> {args.out}")


if __name__ == "__main__":
    main(parser.parse_args())
