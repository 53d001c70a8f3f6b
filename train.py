"""Fine-tune the LLM recommender with LoRA (paper §4.3, §5.2.2): the prompt of Figure 8 (instruction,
preference summary, recent items, one candidate) is answered 'Yes' for the user's next item and 'No' for
a negative, and the model learns the next-token loss of eq. 1.

One process (the CPU, or one GPU):
$ python train.py --data runs/mind/data --summaries runs/mind/summaries.jsonl --out runs/mind/rec
Several processes, the model sharded with FSDP2 (nccl on GPUs, gloo on CPUs):
$ torchrun --standalone --nproc_per_node 8 train.py --data ... --summaries ... --out ...
What learned at the default model's 135M scale (200 users, 100 steps; the paper's defaults are for 7B):
$ python train.py --data D --summaries S --out O --limit 200 --loss answer --lr 1e-3 --grad-accum 4 --epochs 1
The TALLRec baseline (no summary, the whole raw history in the prompt):
$ python train.py --data D --out O --tallrec
Continue an interrupted run from its last checkpoint:
$ python train.py ...the same flags... --resume

Writes to --out: config.json, log.jsonl (one record per optimizer step), epoch_N/ (the adapter after epoch
N, in the format PeftModel.from_pretrained reads) and last/ (adapter, optimizer and loop state: what
--resume reads).
"""
import argparse
import json
import math
import os
import shutil
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

import trsr  # before peft: it quiets an import-time warning of bitsandbytes, which peft imports

from peft import LoraConfig, PeftModel, get_peft_model
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_optimizer_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from tqdm import tqdm

import data
import prompts

parser = argparse.ArgumentParser(description="LoRA fine-tuning of the LLM-TRSR recommender")
parser.add_argument("--data", required=True, help="folder written by data.py (meta.json, items.jsonl, train.jsonl)")
parser.add_argument("--summaries",
                    help="summaries file written by summarize.py; not used with --no-summary or --tallrec")
parser.add_argument("--out", required=True, help="folder for the log, the adapters and the checkpoint")
parser.add_argument("--model", default=trsr.DEFAULT_MODEL, help="hub id, local folder or .gguf file")
parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                    help="auto: bf16 on GPUs (the paper's), fp32 on CPUs")
# prompt
parser.add_argument("--recent", type=int, default=3, help="most recent history items in the prompt (paper: 3)")
parser.add_argument("--no-summary", action="store_true", help="leave the preference summary out (ablation)")
parser.add_argument("--tallrec", action="store_true", help="TALLRec baseline: no summary, the whole raw history")
parser.add_argument("--max-len", type=int, default=2048, help="token budget of a prompt with its answer")
parser.add_argument("--limit", type=int, default=0, help="use only the first N training users (0: all)")
# optimization
parser.add_argument("--loss", default="prompt", choices=["prompt", "answer"],
                    help="prompt: next-token loss over the whole prompt (eq. 1); answer: the Yes/No token only")
parser.add_argument("--epochs", type=int, default=8)
parser.add_argument("--batch-size", type=int, default=1, help="micro batch per process; >1 pads")
parser.add_argument("--grad-accum", type=int, default=64,
                    help="micro batches per optimizer step, over all processes: global batch = batch-size x grad-accum")
parser.add_argument("--lr", type=float, default=1e-4)
# The authors ran DeepSpeed's WarmupLR: constant after a warm-up of 0 steps, which DeepSpeed raises to 2
parser.add_argument("--lr-schedule", default="constant", choices=["constant", "linear"],
                    help="constant after the warm-up (the authors'), or linear decay to 0 over the run")
parser.add_argument("--warmup", type=int, default=2, help="optimizer steps of linear warm-up")
parser.add_argument("--weight-decay", type=float, default=5e-4, help="AdamW weight decay (the authors': 5e-4)")
parser.add_argument("--adam-beta2", type=float, default=0.95, help="AdamW beta2 (the authors': 0.95)")
parser.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0: no clipping)")
parser.add_argument("--lora-r", type=int, default=8)
parser.add_argument("--lora-alpha", type=int, default=16)
parser.add_argument("--lora-dropout", type=float, default=0.05)
parser.add_argument("--lora-targets", default="q_proj,k_proj,v_proj,o_proj",
                    help="comma-separated module names (Pythia: query_key_value,dense)")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--grad-checkpoint", action="store_true",
                    help="recompute each decoder layer's activations in the backward pass: memory for long prompts "
                         "(the paper's 2048 tokens) at the cost of about one more forward")
# checkpoints
parser.add_argument("--save-every", type=int, default=0,
                    help="also checkpoint every K optimizer steps, so an interrupted epoch loses little "
                         "(0: epoch ends only)")
parser.add_argument("--stop-after", type=int, default=0,
                    help="stop after this optimizer step with a checkpoint, as a time-limited job would; "
                         "--resume goes on")
parser.add_argument("--resume", action="store_true", help="continue from OUT/last")
args = parser.parse_args()
config = vars(args)
use_summary = not (args.no_summary or args.tallrec)
if use_summary and not args.summaries:
    parser.error("--summaries is required, unless --no-summary or --tallrec")

# processes: torchrun starts one per GPU (RANK, LOCAL_RANK, WORLD_SIZE); plain python, one
rank, local_rank, world_size, device = trsr.init_distributed()
ddp, master = dist.is_initialized(), rank == 0
print0 = trsr.print0
if device.type == "cpu":
    trsr.keep_heap_small()  # activations are freed and allocated again every step

# global batch = batch-size x grad-accum samples, whatever the number of processes (as nanoGPT does)
assert args.grad_accum % world_size == 0, f"--grad-accum {args.grad_accum} must divide by the {world_size} processes"
accum = args.grad_accum // world_size  # micro-steps per process per optimizer step
global_batch = args.batch_size * args.grad_accum
dtype = trsr.resolve_dtype(args.dtype, device)
on_cpu = dtype == torch.float32 and device.type == "cpu"
print0(f"{world_size} process(es) on {device.type}, dtype {str(dtype)[6:]}"
       + (" (CPU: fp32; the paper trains in bf16 on GPUs)" if on_cpu else ""))

ckpt_dir = os.path.join(args.out, "last")
state = None
if args.resume:
    if not os.path.isfile(os.path.join(ckpt_dir, "state.pt")):
        raise SystemExit(f"--resume: no checkpoint in {ckpt_dir}")
    state = torch.load(os.path.join(ckpt_dir, "state.pt"), weights_only=True)
    # flags that change what is computed must match the interrupted run
    differ = [k for k in config if k not in ("resume", "stop_after", "save_every", "out", "grad_checkpoint")
              and config[k] != state["config"].get(k)]
    if differ:
        raise SystemExit("--resume: these flags differ from the checkpoint's run: "
                         + ", ".join(f"--{k.replace('_', '-')} {config[k]} (was {state['config'].get(k)})"
                                     for k in differ))
elif os.path.exists(ckpt_dir):
    raise SystemExit(f"{args.out} already holds a run; pass --resume to continue it or choose another --out")

# ---- data: every training user gives two samples, its next item (Yes) and its saved negative (No) ----
tokenizer = trsr.load_tokenizer(args.model)
yes_id, no_id = trsr.answer_token_ids(tokenizer)
domain = prompts.DOMAINS[data.load_meta(args.data)["dataset"]]
items = data.load_items(args.data)
users = data.load_split(args.data, "train")
users = users[:args.limit] if args.limit else users
summaries = data.load_summaries(args.summaries) if use_summary else {}
items_path, train_path = os.path.join(args.data, "items.jsonl"), os.path.join(args.data, "train.jsonl")
samples, n_short = [], 0  # samples: token ids of prompt + answer
bar = trsr.progress(len(users), "building prompts", "users", show=master)
for user in users:
    if not user["negatives"]:
        raise ValueError(f"{train_path}: user {user['user']!r} has no negative")
    summary, history = trsr.recommender_inputs(user, items, summaries, args.recent, use_summary, args.tallrec,
                                               args.summaries, items_path)
    for candidate, answer in ((user["target"], yes_id), (user["negatives"][0], no_id)):
        text = trsr.item_text(items, candidate, user["user"], items_path)
        try:
            prefix, (suffix,), shortened = trsr.fit_recommender_prompt(tokenizer, domain, summary, history, [text],
                                                                       args.max_len)
        except ValueError as e:
            raise ValueError(f"user {user['user']!r}, candidate {candidate!r}: {e}") from None
        # the answer is appended as its id, which answer_token_ids checked equals tokenizing the text
        samples.append(tokenizer(prefix + suffix)["input_ids"] + [answer])
        n_short += shortened
    bar.update(1)
bar.close()
lengths = [len(s) for s in samples]
steps_per_epoch = len(samples) // global_batch
if steps_per_epoch == 0:
    raise SystemExit(f"{len(samples)} training samples are fewer than one global batch of {global_batch}; "
                     f"lower --grad-accum or --batch-size, or raise --limit")
total_steps = steps_per_epoch * args.epochs
print0(f"{len(users)} users -> {len(samples)} prompts ({domain}, "
       f"{'TALLRec: whole history' if args.tallrec else f'{args.recent} recent items'}, "
       f"{'with' if use_summary else 'no'} summary), tokens mean {sum(lengths) / len(lengths):.0f} max {max(lengths)}; "
       f"{n_short} shortened to fit --max-len {args.max_len}")
print0(f"global batch {global_batch} = micro batch {args.batch_size} x {accum} micro-steps x {world_size} process(es); "
       f"{steps_per_epoch} steps per epoch ({len(samples) - steps_per_epoch * global_batch} samples left out of each "
       f"epoch, different ones each time), {total_steps} steps")

# ---- model: LoRA on the frozen base, then FSDP2 around it ----
torch.manual_seed(args.seed)  # the same LoRA initialization on every rank
model = trsr.load_model(args.model, dtype=dtype, device=device)
if args.resume:
    model = PeftModel.from_pretrained(model, ckpt_dir, is_trainable=True)
else:
    model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                                             target_modules=args.lora_targets.split(","), task_type="CAUSAL_LM"))
model.train()
if args.grad_checkpoint:
    # non-reentrant: it needs no input that requires grad (the base is frozen, only LoRA trains), and under
    # FSDP2 the recomputed layer simply gathers its weights again
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
print0(f"LoRA r {args.lora_r} on {args.lora_targets}: {n_train:,} trainable of "
       f"{sum(p.numel() for p in model.parameters()):,} parameters")
if ddp:
    # each decoder layer is one FSDP unit (its weights are gathered just before it runs); the root takes
    # the rest (embeddings, final norm, head). fully_shard changes the modules in place, so `model` stays
    # the PeftModel whose save_pretrained writes the adapter.
    mesh = init_device_mesh(device.type, (world_size,))
    layer_classes = set(model.get_base_model()._no_split_modules or [])
    layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
    assert layers, f"found no decoder layers ({layer_classes}) to shard in {args.model}"
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
params = [p for p in model.parameters() if p.requires_grad]
print0(f"AdamW lr {args.lr} ({args.lr_schedule} after {args.warmup} warm-up steps), betas (0.9, {args.adam_beta2}), "
       f"weight decay {args.weight_decay}" + ("; activation checkpointing" if args.grad_checkpoint else ""))
optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, args.adam_beta2), weight_decay=args.weight_decay)


def get_lr(step):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if args.lr_schedule == "constant":
        return args.lr
    return args.lr * (total_steps - step) / (total_steps - args.warmup)


def epoch_order(epoch):
    """The epoch's shuffle, a function of seed and epoch only, so a resumed run sees the same order."""
    return torch.randperm(len(samples), generator=torch.Generator().manual_seed(args.seed * 1000 + epoch)).tolist()


def save_checkpoint(step, elapsed, epoch_end):
    """Adapter, optimizer and loop state to OUT/last (and the adapter to OUT/epoch_N at an epoch's end).
    Every rank takes part in gathering; rank 0 writes to a temporary folder and renames it, so a run killed
    while saving still has its previous checkpoint."""
    full = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    adapter = get_model_state_dict(model, options=full)
    optim = get_optimizer_state_dict(model, optimizer, options=full)
    rng = [None] * world_size  # each rank's dropout draws
    my_rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None}
    if ddp:
        dist.all_gather_object(rng, my_rng)
    else:
        rng = [my_rng]
    if master:
        tmp = ckpt_dir + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, state_dict=adapter)
        torch.save(optim, os.path.join(tmp, "optimizer.pt"))
        torch.save({"step": step, "elapsed": elapsed, "config": config, "rng": rng}, os.path.join(tmp, "state.pt"))
        if os.path.exists(ckpt_dir):
            os.rename(ckpt_dir, ckpt_dir + ".old")
        os.rename(tmp, ckpt_dir)
        shutil.rmtree(ckpt_dir + ".old", ignore_errors=True)
        if epoch_end:
            model.save_pretrained(os.path.join(args.out, f"epoch_{step // steps_per_epoch}"), state_dict=adapter)
        print0(f"saved checkpoint at step {step}"
               + (f" and {args.out}/epoch_{step // steps_per_epoch}" if epoch_end else ""))
    if ddp:
        dist.barrier()


start_step, elapsed0 = 0, 0.0
log_path = os.path.join(args.out, "log.jsonl")
if args.resume:
    optim_state = torch.load(os.path.join(ckpt_dir, "optimizer.pt"), weights_only=True)
    set_optimizer_state_dict(model, optimizer, optim_state, options=StateDictOptions(full_state_dict=True))
    start_step, elapsed0 = state["step"], state["elapsed"]
    if len(state["rng"]) == world_size:
        torch.set_rng_state(state["rng"][rank]["cpu"])
        if device.type == "cuda" and state["rng"][rank]["cuda"] is not None:
            torch.cuda.set_rng_state(state["rng"][rank]["cuda"])
    else:
        print0(f"the checkpoint has {len(state['rng'])} processes' random states, this run {world_size}: dropout "
               f"draws will differ from the interrupted run")
        torch.manual_seed(args.seed + rank)
    if master:  # drop log records of steps after the checkpoint: they are about to be redone
        kept = [r for r in data.read_jsonl(log_path) if r["step"] <= start_step] if os.path.exists(log_path) else []
        with open(log_path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
    print0(f"resumed from {ckpt_dir} at step {start_step}")
else:
    torch.manual_seed(args.seed + rank)  # dropout: different draws on each rank
    if master:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        open(log_path, "w").close()

# ---- training loop ----
pad_id = tokenizer.pad_token_id
# a bar on a terminal only: a log file already gets one line per step
pbar = tqdm(total=total_steps, initial=start_step, unit="step", disable=not (master and sys.stderr.isatty()),
            dynamic_ncols=True)
t_start = time.time()
order = None
for step in range(start_step, total_steps):
    t0 = time.time()
    epoch, i = divmod(step, steps_per_epoch)
    if order is None or i == 0:
        order = epoch_order(epoch)
    lr = get_lr(step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    batch = order[(i * global_batch):((i + 1) * global_batch)]
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)  # this rank's summed sample losses, tokens
    for micro in range(accum):
        if ddp:  # reduce-scatter gradients only once, after the last micro-step
            model.set_requires_gradient_sync(micro == accum - 1)
        start = (micro * world_size + rank) * args.batch_size
        rows = [samples[j] for j in batch[start:start + args.batch_size]]
        input_ids, mask = trsr.right_pad(rows, pad_id)
        input_ids, mask = input_ids.to(device), mask.to(device)
        if args.loss == "answer":
            # only the logits that predict each row's last token (the answer) are computed
            answer_at = mask.sum(1) - 1
            keep = torch.unique(answer_at - 1)
            logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False, logits_to_keep=keep).logits
            logits = logits[torch.arange(len(rows), device=device), torch.searchsorted(keep, answer_at - 1)]
            answers = input_ids.gather(1, answer_at[:, None])[:, 0]
            sample_loss = F.cross_entropy(logits.float(), answers, reduction="none")
        else:
            logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits[:, :-1]
            targets = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            # flattened to (tokens, vocabulary): a (batch, vocabulary, tokens) view took 2.4x as long on CPU
            token_loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                                         reduction="none").view(targets.shape)
            sample_loss = token_loss.sum(1) / mask[:, 1:].sum(1)  # eq. 1 per prompt, as a mean over its tokens
        # the step's loss is the mean over the global batch; FSDP averages gradients over ranks, so each
        # rank divides by its own share of the batch
        (sample_loss.sum() / (args.batch_size * accum)).backward()
        loss_sum += torch.stack([sample_loss.detach().sum().double(), mask.sum().double()])
    if ddp:
        dist.all_reduce(loss_sum)
    loss, tokens = loss_sum[0].item() / global_batch, int(loss_sum[1].item())
    if not math.isfinite(loss):
        print0(f"step {step + 1}: loss is {loss}; stopping. The last good checkpoint is in {ckpt_dir} "
               f"(if any was saved); try a lower --lr")
        trsr.teardown_distributed()
        sys.exit(1)
    if args.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

    done, dt, elapsed = step + 1, time.time() - t0, elapsed0 + time.time() - t_start
    if master:
        record = {"step": done, "epoch": epoch + 1, "loss": loss, "lr": lr, "tokens": tokens,
                  "tokens_per_s": tokens / dt, "elapsed": elapsed}
        with open(log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        print0(f"step {done}/{total_steps} | epoch {epoch + 1} | loss {loss:.4f} | lr {lr:.2e} | "
               f"{tokens / dt:.0f} tok/s | {elapsed:.1f}s")
        pbar.update(1)
    epoch_end = done % steps_per_epoch == 0
    if epoch_end or (args.save_every and done % args.save_every == 0) or done == args.stop_after:
        save_checkpoint(done, elapsed, epoch_end)
    if done == args.stop_after:
        print0(f"stopped after step {done} (--stop-after); continue with --resume")
        break
pbar.close()
print0(f"done: {args.out}")
trsr.teardown_distributed()
