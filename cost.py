"""Where the hours of the paper's setting would go on one node of GPUs: an estimate, not a measurement.

$ python cost.py --gpus 8                               # 8 H100 SXM (the defaults below)
$ python cost.py --gpus 4 --hbm-tbs 4.8 --hbm-gb 141   # 4 H200

  --gpus      GPUs of the node (default 8)
  --tflops    effective bf16 TFLOP/s per GPU in prefill and training (H100 SXM peak: 989) (default 400)
  --hbm-tbs   memory bandwidth per GPU, TB/s (H100 SXM: 3.35; H200: 4.8) (default 3.35)
  --hbm-gb    memory per GPU, GB (H100 SXM: 80) (default 80)
  --link-gbs  NVLink bandwidth per GPU and direction, GB/s (H100 SXM: 450) (default 450)
  --out       the JSON record (default cost.json)

A cost model, pure arithmetic: no model is loaded, no GPU is needed, nothing is timed. It prints the paper's
setting (trsr.py --preset paper on MIND) stage by stage, with the work batched as trsr's scripts batch it, and
its time with today's code and after the two fixes of PAPER_FIXES. FLOPs and bytes come from the model shapes
and the mean prompt lengths below, times from the throughputs in the flags. Every figure is an estimate, for
seeing before renting a node where the time goes; what it leaves out (loading, checkpoints, tokenizing, uneven
ranks, padding, communication overlapping compute perfectly) is listed in PAPER_NOTES and printed with the table.
"""
import argparse
import json
import math

import data
import prompts

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--gpus", type=int, default=8, help="GPUs of the node")
parser.add_argument("--tflops", type=float, default=400.0,
                    help="effective bf16 TFLOP/s per GPU in prefill and training (H100 SXM peak: 989)")
parser.add_argument("--hbm-tbs", type=float, default=3.35, help="memory bandwidth per GPU, TB/s "
                    "(H100 SXM: 3.35; H200: 4.8)")
parser.add_argument("--hbm-gb", type=float, default=80.0, help="memory per GPU, GB (H100 SXM: 80)")
parser.add_argument("--link-gbs", type=float, default=450.0,
                    help="NVLink bandwidth per GPU and direction, GB/s (H100 SXM: 450)")
parser.add_argument("--out", default="cost.json", help="where the JSON record goes")

# Shapes from the models' config.json; both have as many key/value heads as heads (no grouped-query attention)
LLAMA_30B = {"layers": 60, "hidden": 6656, "ffn": 17920, "heads": 52, "kv_heads": 52, "vocab": 32000}  # upstage/
# llama-30b-instruct-2048, ~32.5B parameters: the paper's summarizer
LLAMA2_7B = {"layers": 32, "hidden": 4096, "ffn": 11008, "heads": 32, "kv_heads": 32, "vocab": 32000}  # meta-llama/
# Llama-2-7b-hf, 6.74B parameters: the paper's recommender

# The setting: the paper's, as trsr.py's paper preset runs it, every stage at its script's defaults
PAPER_USERS = data.PAPER_SPLIT  # 10,000 / 1,000 / 1,000 train / val / test users (Table 1)
MEAN_HISTORY = next(v for k, _, v in data.REAL_MIND if k == "history")  # 16.31 items: real MIND users (data.py)
ITEM_TOKENS = data.PAPER_TABLE1["mind"]["tokens"]  # 40.83 Llama tokens per MIND item text (Table 1)
NUMBERED_TOKENS = 4  # "12. " and the newline of a numbered item or summary (llm.fit_recommender_prompt's count)
TOKENS_PER_WORD = 1.3  # Llama tokens per word of a template's fixed English text, a rule of thumb; each newline is
# one token more (sentencepiece writes it as the byte <0x0A>). No Llama tokenizer is needed to run this script.
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


def main(argv=None):
    """The estimate's table, fixes and notes, then one row per stage; the record (less its rows) to --out."""
    args = parser.parse_args(argv)
    result = bench_paper(args)
    rows = result.pop("rows")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print("\n| measurement | result | detail |\n|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
