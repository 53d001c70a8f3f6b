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
import json
import os
import re
import time

import torch
import torch.distributed as dist
from transformers import GenerationConfig

import data
import prompts
import trsr

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--data", required=True, help="folder written by data.py (items.jsonl, <split>.jsonl, meta.json)")
parser.add_argument("--paradigm", required=True, help="hierarchical or recurrent (the PARADIGMS table below)")
parser.add_argument("--out", required=True, help="summaries file to write (JSON lines)")
parser.add_argument("--splits", default="train,val,test", help="comma-separated splits whose users to summarize")
parser.add_argument("--limit", type=int, default=0, help="only the first N users of each split (0: all)")
parser.add_argument("--model", default=trsr.DEFAULT_MODEL, help="hub id, local folder or .gguf file; default: bundled SmolLM2-135M-Instruct")
parser.add_argument("--format", choices=prompts.SUM_FORMATS, default=None,
                    help="prompt frame: the tokenizer's chat template, or the paper's '### User:' text "
                         "(default: chat when the tokenizer has a template, else paper)")
parser.add_argument("--fan-in", type=int, default=0, help="hierarchical: merge this many summaries at a time (0: all at once, as the paper)")
parser.add_argument("--batch-size", type=int, default=16, help="prompts per forward pass, and users in lockstep")
parser.add_argument("--max-new-tokens", type=int, default=128)
parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"], help="auto: bf16 on GPU, fp32 on CPU")
parser.add_argument("--quantize", default="none", choices=["none", "8bit", "4bit"], help="load the summarizer through bitsandbytes (paper: 8-bit)")
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
# lockstep, while each paradigm still reads as the plain procedure of the paper.

def hierarchical(blocks, domain, args):
    """§4.1: summarize each block, then merge the summaries (the paper: all of them in one prompt)."""
    summaries = yield [prompts.render_block(domain, block) for block in blocks]
    return (yield from merge(summaries, args.fan_in or len(summaries)))


def merge(summaries, fan_in):
    """Merge in groups of fan_in, oldest first, and recurse on the merged level until one summary is left.
    A group of one has nothing to merge and passes up unchanged."""
    if len(summaries) == 1:
        return summaries[0]
    assert fan_in >= 2, f"--fan-in must be 0 (all at once) or at least 2, got {fan_in}"
    groups = [summaries[i:i + fan_in] for i in range(0, len(summaries), fan_in)]
    merged = iter((yield [prompts.render_merge(group) for group in groups if len(group) > 1]))
    return (yield from merge([next(merged) if len(group) > 1 else group[0] for group in groups], fan_in))


def recurrent(blocks, domain, args):
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


def lockstep(jobs, start, llm, pool):
    """Run up to `pool` users' paradigm generators side by side: each round gathers every prompt the
    active users are waiting on, asks `llm` for all of them at once, and hands each user its answers.
    A finished user makes room for the next, so the batches stay full. Yields (job index, summary,
    steps) as users finish; steps are every summary the user's generator received, in order."""
    todo, active = iter(enumerate(jobs)), []
    while True:
        while len(active) < pool and (job := next(todo, None)) is not None:
            gen = start(job[1])
            active.append([job[0], gen, next(gen), []])
        if not active:
            return
        answers = llm([prompt for _, _, asked, _ in active for prompt in asked])
        still = []
        for user in active:
            i, gen, asked, steps = user
            got, answers = answers[:len(asked)], answers[len(asked):]
            steps.extend(got)
            try:
                user[2] = gen.send(got)
                still.append(user)
            except StopIteration as done:
                yield i, done.value, steps
        active = still


# ---- Generation and its cache ----

def cache_key(model_id, text, settings):
    """Content address of one generation: the same model, prompt text and settings give the same output."""
    return hashlib.sha256(json.dumps([model_id, text, settings], ensure_ascii=False).encode()).hexdigest()


def generation_config(model, tokenizer, max_new_tokens, fmt="chat", sample=None):
    """Greedy, or sampling with sample = {"temperature", "top_k", "top_p"}, ending at the model's or the
    tokenizer's end-of-turn token. In the paper's frame, where nothing but the text marks a turn, also at
    "###": stopping there saves the tokens of a hallucinated next turn. (Only there: transformers prepares
    a stop string by walking the whole vocabulary once per process, ~15-45 s for SmolLM2's 49k tokens.)"""
    eos = model.generation_config.eos_token_id
    eos = sorted({tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos] if eos is not None else [])})
    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=sample is not None, **(sample or {}),
                            eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                            stop_strings=["###"] if fmt == "paper" else None)


@torch.no_grad()
def generate(model, tokenizer, texts, gen_config, add_special_tokens):
    """Continuations of a batch of prompt texts, left padded: (output texts, tokens generated each)."""
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens).to(model.device)
    out = model.generate(**enc, generation_config=gen_config, tokenizer=tokenizer)
    outputs, counts = [], []
    stop = {tokenizer.pad_token_id, *gen_config.eos_token_id}
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
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


def print0(*a, **k):
    if int(os.environ.get("RANK", 0)) == 0:
        print(*a, **k, flush=True)


# ---- Main ----

def main(args):
    if args.paradigm not in PARADIGMS:
        parser.error(f"--paradigm must be one of {sorted(PARADIGMS)}, got {args.paradigm!r}")
    config = vars(args)
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = trsr.default_device()
    if world_size > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    torch.manual_seed(args.seed)
    print0(f"config: {json.dumps(config)}")

    # users and their blocks of item texts
    meta = data.load_meta(args.data)
    if meta.get("dataset") not in prompts.DOMAINS:
        raise ValueError(f"{os.path.join(args.data, 'meta.json')}: 'dataset' must be one of "
                         f"{sorted(prompts.DOMAINS)}, got {meta.get('dataset')!r}")
    domain = prompts.DOMAINS[meta["dataset"]]
    items = data.load_items(args.data)
    users, seen = [], {}
    for split in args.splits.split(","):
        path = os.path.join(args.data, f"{split}.jsonl")
        for record in data.load_split(args.data, split)[:args.limit or None]:
            if not record.get("history"):
                raise ValueError(f"{path}: user {record.get('user')!r} has no history to summarize")
            missing = [i for i in record["history"] if i not in items]
            if missing:
                raise ValueError(f"{path}: user {record['user']!r}: history items {missing[:5]} are not in "
                                 f"{os.path.join(args.data, 'items.jsonl')}")
            if record["user"] in seen:  # one summary per user: the same user twice must mean the same history
                if seen[record["user"]] != record["history"]:
                    raise ValueError(f"{path}: user {record['user']!r} appears again with another history")
                continue
            seen[record["user"]] = record["history"]
            users.append(record)
    mine = [users[i] for i in range(rank, len(users), world_size)]
    jobs = [[[items[i] for i in block] for block in data.blocks(u["history"])] for u in mine]

    # the summarizer: frozen, eval mode, left padding so every row's prompt ends where generation starts
    tokenizer = trsr.load_tokenizer(args.model)
    tokenizer.padding_side = "left"
    model = trsr.load_model(args.model, dtype=args.dtype, quantize=args.quantize, device=device)
    model.eval().requires_grad_(False)
    # The chat template is the default wherever there is one. With SmolLM2-135M-Instruct it was clearly the
    # better frame: on 8 generated users (4 MIND, 4 Amazon) its block summaries reused 13 words of the
    # items on average against 5 in the paper's frame, and its updates 15 against 1; in the paper's frame
    # the model mostly wrote about the task ("I will use the following techniques ...") or a list of
    # "1. User:" lines. A model tuned on the paper's frame (the paper's Llama-30b-instruct) wants --format paper.
    fmt = args.format or ("chat" if tokenizer.chat_template else "paper")
    # the chat template writes its own special tokens; the paper's frame is plain text after the usual BOS
    add_special_tokens = fmt == "paper"
    sample = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p} if args.sample else None
    gen_config = generation_config(model, tokenizer, args.max_new_tokens, fmt, sample)
    markers = ["###", *(t for t in tokenizer.all_special_tokens if t)]
    model_id = os.path.abspath(args.model) if os.path.exists(args.model) else args.model
    settings = {"max_new_tokens": args.max_new_tokens, "do_sample": args.sample, "dtype": str(model.dtype).removeprefix("torch."),
                "quantize": args.quantize}
    if args.sample:  # a sampled summary is one draw: cached under the seed that drew it, so --seed 1 draws anew
        settings.update(sample, seed=args.seed)
    print0(f"{len(users)} users ({len(mine)} on this rank), {args.paradigm}, {domain} prompts, format {fmt}, "
           f"model {args.model} ({str(model.dtype)} on {device})")

    cache_path = args.cache or os.path.join(os.path.dirname(os.path.abspath(args.out)), "summarize_cache.jsonl")
    cache = trsr.read_appended(cache_path, "key")
    cache_fd = trsr.open_append(cache_path)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    part = open(f"{args.out}.rank{rank}", "w", encoding="utf-8")  # this rank's users, as they finish
    stats = dict(users=0, requests=0, generated=0, tokens=0, gen_seconds=0.0, summary_tokens=0, history_tokens=0, empty=0)
    pbar = trsr.progress(len(mine), f"summarize {args.paradigm}", "users", show=rank == 0)

    def llm(contents):
        """Summaries for a list of prompts: the cached ones from the cache, the rest generated in batches
        of prompts of similar length (less padding), each appended to the cache as soon as it exists."""
        texts = [prompts.render_frame(c, fmt, tokenizer) for c in contents]
        keys = [cache_key(model_id, t, settings) for t in texts]
        todo = sorted({k: t for k, t in zip(keys, texts) if k not in cache}.items(), key=lambda kt: len(kt[1]))
        for b in range(0, len(todo), args.batch_size):
            chunk = todo[b:b + args.batch_size]
            t0 = time.time()
            if args.sample:  # each batch's draws depend on the seed and its prompts only, not on what ran before
                torch.manual_seed(int(hashlib.sha256((str(args.seed) + "".join(k for k, _ in chunk)).encode())
                                      .hexdigest()[:15], 16))
            outputs, counts = generate(model, tokenizer, [t for _, t in chunk], gen_config, add_special_tokens)
            stats["gen_seconds"] += time.time() - t0
            for (k, _), output, n in zip(chunk, outputs, counts):
                cache[k] = {"key": k, "output": output, "tokens": n}
                trsr.append(cache_fd, cache[k])
            stats["generated"] += len(chunk)
            stats["tokens"] += sum(counts)
            pbar.set_postfix_str(f"{stats['tokens'] / max(stats['gen_seconds'], 1e-9):.1f} tok/s, {stats['generated']} generated")
        stats["requests"] += len(texts)
        summaries = [clean(cache[k]["output"], markers, ran_out=cache[k]["tokens"] >= args.max_new_tokens) for k in keys]
        stats["empty"] += sum(s == prompts.EMPTY_SUMMARY for s in summaries)
        return summaries

    t0 = time.time()
    start = lambda blocks: PARADIGMS[args.paradigm](blocks, domain, args)
    for i, summary, steps in lockstep(jobs, start, llm, pool=args.batch_size):
        part.write(json.dumps({"user": mine[i]["user"], "paradigm": args.paradigm, "summary": summary, "steps": steps},
                              ensure_ascii=False) + "\n")
        part.flush()
        stats["users"] += 1
        stats["summary_tokens"] += len(tokenizer(summary, add_special_tokens=False)["input_ids"])
        stats["history_tokens"] += sum(len(ids) for ids in tokenizer([t for b in jobs[i] for t in b], add_special_tokens=False)["input_ids"])
        pbar.update(1)
    pbar.close()
    part.close()
    os.close(cache_fd)
    seconds = time.time() - t0

    if world_size > 1:  # totals over all ranks, then wait until every part is complete
        totals = torch.tensor([float(v) for v in stats.values()], dtype=torch.float64, device=device)
        dist.all_reduce(totals)
        stats = dict(zip(stats, totals.tolist()))
        dist.barrier()
    if rank == 0:
        # one file in the order of the data, written aside and renamed, so --out is always whole
        done = {}
        for r in range(world_size):
            for record in data.read_jsonl(f"{args.out}.rank{r}"):
                done[record["user"]] = record
        with open(args.out + ".tmp", "w", encoding="utf-8") as f:
            for u in users:
                f.write(json.dumps(done[u["user"]], ensure_ascii=False) + "\n")
        os.replace(args.out + ".tmp", args.out)
        for r in range(world_size):
            os.remove(f"{args.out}.rank{r}")
        n = max(stats["users"], 1)
        # gen_seconds is summed over ranks that ran side by side: their joint rate is tokens / (sum / ranks)
        stats.update(seconds=round(seconds, 1), mean_summary_tokens=round(stats["summary_tokens"] / n, 1),
                     mean_history_tokens=round(stats["history_tokens"] / n, 1),
                     tokens_per_second=round(stats["tokens"] * world_size / max(stats["gen_seconds"], 1e-9), 2))
        with open(os.path.splitext(args.out)[0] + ".meta.json", "w", encoding="utf-8") as f:
            json.dump({"config": config, "model_id": model_id, "format": fmt, "domain": domain, "settings": settings,
                       "world_size": world_size, "cache": cache_path, "stats": stats}, f, indent=1)
        print0(f"summarized {int(stats['users'])} users in {seconds:.0f} s: {int(stats['requests'])} generations, "
               f"{int(stats['generated'])} new and {int(stats['requests'] - stats['generated'])} from the cache; "
               f"{int(stats['tokens'])} tokens at {stats['tokens_per_second']:.1f} tok/s; "
               f"mean summary {stats['mean_summary_tokens']:.0f} tokens vs {stats['mean_history_tokens']:.0f} tokens of history; "
               f"{int(stats['empty'])} empty outputs -> {args.out}")
    if world_size > 1:
        dist.destroy_process_group()
    return stats


if __name__ == "__main__":
    main(parser.parse_args())
