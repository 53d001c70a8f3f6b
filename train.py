"""Fine-tune the LLM recommender with LoRA (paper §4.3, §5.2.2): the prompt of Figure 8 (instruction,
preference summary, recent items, one candidate) is answered 'Yes' for the user's next item and 'No' for
each of its saved negatives, and the model learns the next-token loss of eq. 1.

A user's prompts differ only in the candidate, so by default the shared prefix (instruction, summary, recent
items) runs once and all of the user's candidates run as one batch on its key/value cache, gradients flowing
back through it: the same losses and gradients as running every prompt whole (--per-prompt), for less work.

One process (the CPU, or one GPU):
$ python train.py --data runs/mind/data --summaries runs/mind/summaries.jsonl --out runs/mind/rec
Several processes, the model sharded with FSDP2 (nccl on GPUs, gloo on CPUs):
$ torchrun --standalone --nproc_per_node 8 train.py --data ... --summaries ... --out ...
What learned at the default model's 135M scale (200 users, 100 steps; the paper's defaults are for 7B):
$ python train.py --data D --summaries S --out O --limit 200 --loss answer --lr 1e-3 --grad-accum 4 --epochs 1
The TALLRec baseline (no summary, the whole raw history in the prompt):
$ python train.py --data D --out O --tallrec
Every weight trained instead of LoRA (the authors' default), and LoRA on the MLP too:
$ python train.py ... --lora none
$ python train.py ... --lora-targets all-linear
Validation Recall@3 every 10 optimizer steps (a learning curve in OUT/val.jsonl):
$ python train.py ... --val-every 10 --val-users 100
Continue an interrupted run from its last checkpoint:
$ python train.py ...the same flags... --resume

Writes to --out: config.json, log.jsonl (one record per optimizer step), epoch_N/ (the adapter after epoch
N, in the format PeftModel.from_pretrained reads; with --lora none the whole model, in the format
from_pretrained reads) and last/ (weights, optimizer and loop state: what --resume reads); with --val-every,
val.jsonl.
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

import common
import llm  # before peft: it quiets an import-time warning of bitsandbytes, which peft imports

from peft import LoraConfig, PeftModel, get_peft_model
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_optimizer_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from tqdm import tqdm

import data
import evaluate

parser = argparse.ArgumentParser(description="LoRA fine-tuning of the LLM-TRSR recommender")
parser.add_argument("--data", required=True, help="folder written by data.py (meta.json, items.jsonl, train.jsonl)")
parser.add_argument("--summaries",
                    help="summaries file written by summarize.py; not used with --no-summary or --tallrec")
parser.add_argument("--out", required=True, help="folder for the log, the adapters and the checkpoint")
parser.add_argument("--model", default=llm.DEFAULT_MODEL, help="hub id, local folder or .gguf file")
parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                    help="auto: bf16 on GPUs (the paper's), fp32 on CPUs")
# prompt
llm.add_prompt_flags(parser)  # --recent, --no-summary, --tallrec, --max-len, as evaluate.py has them
parser.add_argument("--limit", type=int, default=0, help="use only the first N training users (0: all)")
parser.add_argument("--negatives", type=int, default=0,
                    help="train on each user's first N saved negatives (0: all that data.py --train-negatives saved); "
                         "the loss weighs every prompt alike, as the paper's 1:1 does")
parser.add_argument("--per-prompt", action="store_true",
                    help="run every prompt whole instead of sharing a user's prefix across its candidates: the same "
                         "losses and gradients within float error, slower (for comparison)")
# optimization
parser.add_argument("--loss", default="prompt", choices=["prompt", "answer"],
                    help="prompt: next-token loss over the whole prompt (eq. 1); answer: the Yes/No token only")
parser.add_argument("--epochs", type=int, default=8)
parser.add_argument("--batch-size", type=int, default=1, help="micro batch of prompts per process (--per-prompt; "
                    ">1 pads); the shared-prefix path runs one user's prompts per micro-step")
parser.add_argument("--grad-accum", type=int, default=64,
                    help="micro batches per optimizer step, over all processes: global batch = batch-size x grad-accum "
                         "prompts, whole users (1 + negatives prompts each)")
parser.add_argument("--lr", type=float, default=1e-4)
# The authors ran DeepSpeed's WarmupLR: constant after a warm-up of 0 steps, which DeepSpeed raises to 2
parser.add_argument("--lr-schedule", default="constant", choices=["constant", "linear"],
                    help="constant after the warm-up (the authors'), or linear decay to 0 over the run")
parser.add_argument("--warmup", type=int, default=2, help="optimizer steps of linear warm-up")
parser.add_argument("--weight-decay", type=float, default=5e-4, help="AdamW weight decay (the authors': 5e-4)")
parser.add_argument("--adam-beta2", type=float, default=0.95, help="AdamW beta2 (the authors': 0.95)")
parser.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0: no clipping)")
parser.add_argument("--lora", default="yes", choices=["yes", "none"],
                    help="yes: LoRA adapters on the frozen base (the paper's); none: every weight trained (full "
                         "fine-tuning, the authors' code's default)")
parser.add_argument("--lora-r", type=int, default=8)
parser.add_argument("--lora-alpha", type=int, default=16)
parser.add_argument("--lora-dropout", type=float, default=0.05)
parser.add_argument("--lora-targets", default="q_proj,k_proj,v_proj,o_proj",
                    help="comma-separated module names (Pythia: query_key_value,dense), or all-linear (attention and "
                         "MLP, every linear layer but the output head)")
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
# validation while training: the learning curve
parser.add_argument("--val-every", type=int, default=0,
                    help="score the val users' 21 candidates every K optimizer steps, before the first and after the "
                         "last, into OUT/val.jsonl (0: never)")
parser.add_argument("--val-users", type=int, default=0, help="with --val-every: the first N val users (0: all)")
args = parser.parse_args()
config = vars(args)
use_summary = not (args.no_summary or args.tallrec)
if use_summary and not args.summaries:
    parser.error("--summaries is required, unless --no-summary or --tallrec")
if args.grad_checkpoint and not args.per_prompt:
    # transformers drops the key/value cache inside a checkpointed layer, and the shared prefix lives in it
    parser.error("--grad-checkpoint needs --per-prompt: activation checkpointing cannot keep the shared prefix's "
                 "key/value cache")

# processes: torchrun starts one per GPU (RANK, LOCAL_RANK, WORLD_SIZE); plain python, one
rank, local_rank, world_size, device = llm.init_distributed()
ddp, master = dist.is_initialized(), rank == 0
print0 = common.print0
if device.type == "cpu":
    llm.keep_heap_small()  # activations are freed and allocated again every step

# global batch = batch-size x grad-accum samples, whatever the number of processes (as nanoGPT does)
assert args.grad_accum % world_size == 0, f"--grad-accum {args.grad_accum} must divide by the {world_size} processes"
accum = args.grad_accum // world_size  # micro-steps per process per optimizer step
global_batch = args.batch_size * args.grad_accum
dtype = llm.resolve_dtype(args.dtype, device)
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
    differ = [k for k in config if k not in ("resume", "stop_after", "save_every", "out", "grad_checkpoint",
                                             "val_every", "val_users")
              and config[k] != state["config"].get(k)]
    if differ:
        raise SystemExit("--resume: these flags differ from the checkpoint's run: "
                         + ", ".join(f"--{k.replace('_', '-')} {config[k]} (was {state['config'].get(k)})"
                                     for k in differ))
elif os.path.exists(ckpt_dir):
    raise SystemExit(f"{args.out} already holds a run; pass --resume to continue it or choose another --out")

# ---- data: every training user gives 1 + K prompts that share a prefix: its next item (Yes), its K negatives (No) ----
tokenizer = llm.load_tokenizer(args.model)
yes_no = llm.answer_token_ids(tokenizer)  # the token ids of the answers Yes and No
domain = data.load_domain(args.data)
items = data.load_items(args.data)
users = data.load_split(args.data, "train")
users = users[:args.limit] if args.limit else users
summaries = data.load_summaries(args.summaries) if use_summary else {}
items_path, train_path = os.path.join(args.data, "items.jsonl"), os.path.join(args.data, "train.jsonl")
groups, n_short = [], 0  # per user: (prefix ids, [candidate suffix ids], [answer id per candidate])
bar = common.progress(len(users), "building prompts", "users", show=master)
for user in users:
    negatives = user["negatives"][:args.negatives or None]
    want = len(groups[0][2]) - 1 if groups else max(args.negatives, 1)  # every user gives as many prompts
    if len(negatives) < want or (groups and len(negatives) != want):
        raise ValueError(f"{train_path}: user {user['user']!r} has {len(negatives)} negative(s) where {want} are "
                         f"needed (--negatives {args.negatives}); rebuild the data with data.py --train-negatives K")
    group, shortened = llm.training_prompts(tokenizer, domain, user, negatives, items, summaries, yes_no, args.recent,
                                            use_summary, args.tallrec, args.max_len, args.summaries, items_path)
    groups.append(group)
    n_short += shortened
    bar.update(1)
bar.close()
per_user = len(groups[0][1])  # prompts per user: 1 + K
lengths = [len(head) + len(tail) + 1 for head, tails, _ in groups for tail in tails]
if global_batch % per_user:
    raise SystemExit(f"a global batch of {global_batch} prompts does not hold whole users of {per_user} prompts "
                     f"(1 positive + {per_user - 1} negatives); choose --grad-accum x --batch-size as a multiple of "
                     f"{per_user}")
users_per_step = global_batch // per_user
if users_per_step % world_size:
    raise SystemExit(f"{users_per_step} users per optimizer step do not divide among {world_size} processes; raise "
                     f"--grad-accum")
steps_per_epoch = len(groups) // users_per_step
if steps_per_epoch == 0:
    raise SystemExit(f"{len(groups)} training users are fewer than one global batch of {users_per_step} users "
                     f"({global_batch} prompts); lower --grad-accum or --batch-size, or raise --limit")
total_steps = steps_per_epoch * args.epochs
print0(f"{len(users)} users -> {len(lengths)} prompts, 1 positive : {per_user - 1} negative(s) each ({domain}, "
       f"{'TALLRec: whole history' if args.tallrec else f'{args.recent} recent items'}, "
       f"{'with' if use_summary else 'no'} summary), tokens mean {sum(lengths) / len(lengths):.0f} max {max(lengths)}, "
       f"shared prefix mean {sum(len(g[0]) for g in groups) / len(groups):.0f}; {n_short} users' prompts shortened to "
       f"fit --max-len {args.max_len}")
micro_desc = (f"micro batch {args.batch_size} prompt(s) x {accum} micro-steps" if args.per_prompt else
              f"{users_per_step // world_size} micro-steps of one user's {per_user} prompts (shared prefix)")
print0(f"global batch {global_batch} prompts = {users_per_step} users = {micro_desc} x {world_size} process(es); "
       f"{steps_per_epoch} steps per epoch ({len(groups) - steps_per_epoch * users_per_step} users left out of each "
       f"epoch, different ones each time), {total_steps} steps")

# ---- model: LoRA on the frozen base (or every weight trained), then FSDP2 around it ----
torch.manual_seed(args.seed)  # the same LoRA initialization on every rank
full_ft = args.lora == "none"
if full_ft:  # the whole model is the checkpoint
    model = llm.load_model(ckpt_dir if args.resume else args.model, dtype=dtype, device=device)
else:
    model = llm.load_model(args.model, dtype=dtype, device=device)
    if args.resume:
        model = PeftModel.from_pretrained(model, ckpt_dir, is_trainable=True)
    else:
        targets = args.lora_targets if args.lora_targets == "all-linear" else args.lora_targets.split(",")
        model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha,
                                                 lora_dropout=args.lora_dropout, target_modules=targets,
                                                 task_type="CAUSAL_LM"))
model.train()
if args.grad_checkpoint:
    # non-reentrant: it needs no input that requires grad (the base is frozen, only LoRA trains), and under
    # FSDP2 the recomputed layer simply gathers its weights again
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
print0(("full fine-tuning: " if full_ft else f"LoRA r {args.lora_r} on {args.lora_targets}: ")
       + f"{n_train:,} trainable of {sum(p.numel() for p in model.parameters()):,} parameters")
if ddp:
    # each decoder layer is one FSDP unit (its weights are gathered just before it first runs); the root takes
    # the rest (embeddings, final norm, head). fully_shard changes the modules in place, so `model` stays
    # the PeftModel (or the plain model) whose save_pretrained writes the checkpoint. A unit's weights stay
    # gathered from its first forward of an optimizer step to the step's last backward (no resharding after
    # forward or backward; the step's end reshards every unit before the optimizer updates the shards): one
    # all-gather per unit per optimizer step whatever the accumulation, where resharding would gather mostly
    # frozen weights again in every forward and backward of every micro-step. The price is a whole unsharded
    # copy of the model per process during the step (13.5 GB for Llama-2-7b in bf16); the gradients and
    # AdamW's state stay sharded.
    mesh = init_device_mesh(device.type, (world_size,))
    base_model = model if full_ft else model.get_base_model()
    layer_classes = set(base_model._no_split_modules or [])
    layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
    assert layers, f"found no decoder layers ({layer_classes}) to shard in {args.model}"
    # In bf16 the LoRA weights stay fp32 where AdamW updates them (the shards), but are gathered in bf16 for the
    # forward and backward, so the inputs they save for the backward are bf16 rather than fp32 (at Llama-2-7b's
    # shape, 193 instead of 257 KiB of activations per token per layer); gradients are reduced in fp32.
    policy = MixedPrecisionPolicy(dtype, reduce_dtype=torch.float32) if dtype != torch.float32 else \
        MixedPrecisionPolicy()
    for layer in layers:
        fully_shard(layer, mesh=mesh, reshard_after_forward=False, mp_policy=policy)
    fully_shard(model, mesh=mesh, reshard_after_forward=False, mp_policy=policy)
    model.set_reshard_after_backward(False)  # the step's end reshards (reshard_units), once every backward is done


def reshard_units():
    """Free every FSDP unit's gathered weights (each unit reshards only its own): before the optimizer updates
    the shards, and after validation's forwards, which no backward follows."""
    for unit in layers + [model]:
        unit.reshard()


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
    """The epoch's shuffle of the users, a function of seed and epoch only, so a resumed run sees the same order."""
    return torch.randperm(len(groups), generator=torch.Generator().manual_seed(args.seed * 1000 + epoch)).tolist()


def save_checkpoint(step, elapsed, epoch_end):
    """Adapter (or whole model), optimizer and loop state to OUT/last, and the adapter (model) to OUT/epoch_N at an
    epoch's end.
    Every rank takes part in gathering; rank 0 writes to a temporary folder and renames it, so a run killed
    while saving still has its previous checkpoint."""
    full = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    weights = get_model_state_dict(model, options=full)  # the adapter, or with --lora none every weight
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
        save_weights(tmp, weights)
        torch.save(optim, os.path.join(tmp, "optimizer.pt"))
        torch.save({"step": step, "elapsed": elapsed, "config": config, "rng": rng}, os.path.join(tmp, "state.pt"))
        if os.path.exists(ckpt_dir):
            os.rename(ckpt_dir, ckpt_dir + ".old")
        os.rename(tmp, ckpt_dir)
        shutil.rmtree(ckpt_dir + ".old", ignore_errors=True)
        if epoch_end:
            save_weights(os.path.join(args.out, f"epoch_{step // steps_per_epoch}"), weights)
        print0(f"saved checkpoint at step {step}"
               + (f" and {args.out}/epoch_{step // steps_per_epoch}" if epoch_end else ""))
    if ddp:
        dist.barrier()


def save_weights(folder, weights):
    """An adapter folder that PeftModel.from_pretrained reads, or with --lora none a model folder (with its
    tokenizer) that from_pretrained reads."""
    if full_ft:
        model.save_pretrained(folder, state_dict=weights)
        tokenizer.save_pretrained(folder)
    else:  # trsr never resizes the vocabulary; peft's "auto" would ask the Hub for the base's config at every save
        model.save_pretrained(folder, state_dict=weights, save_embedding_layers=False)


# validation while training: every val user's 21 candidates scored as evaluate.py scores them
val_users = data.load_split(args.data, "val")[:args.val_users or None] if args.val_every else []
if args.val_every and len(val_users) < world_size:
    raise SystemExit(f"--val-every: {args.data}/val.jsonl has {len(val_users)} users, fewer than the {world_size} "
                     f"processes; build the data with more --n-val users")
scorer = evaluate.Scorer(args.model, tokenizer, yes_no, domain, items, summaries,
                         {"recent": args.recent, "no_summary": args.no_summary, "tallrec": args.tallrec,
                          "max_len": args.max_len}, args.data, prefix_cache=True)


def validate(step, elapsed):
    """Val Recall@K and MRR@K of the model as it is now, one record in OUT/val.jsonl; every rank scores every
    world_size-th user (padded to the same count, since each forward under FSDP is a collective)."""
    t0 = time.time()
    model.eval()
    mine = val_users[rank::world_size]
    mine += mine[:1] * (-(-len(val_users) // world_size) - len(mine))  # repeats, dropped below
    scores = [scorer.score(model, u)[1] for u in mine]
    model.train()
    if ddp:
        reshard_units()
        gathered = [None] * world_size
        dist.all_gather_object(gathered, scores)
        by_user = {r + world_size * i: s for r, part in enumerate(gathered) for i, s in enumerate(part)}
        scores = [by_user[j] for j in range(len(val_users))]
    metrics = {m: float(v.mean()) for m, v in evaluate.per_user_metrics(scores).items()
               if m in ("Recall@3", "Recall@5", "Recall@10", "MRR@10")}
    if master:
        with open(val_path, "a") as f:
            f.write(json.dumps({"step": step, "elapsed": elapsed, "users": len(val_users), **metrics}) + "\n")
        print0(f"val step {step}: " + " | ".join(f"{m} {v:.4f}" for m, v in metrics.items())
               + f" ({len(val_users)} users, {time.time() - t0:.0f} s)")
    return time.time() - t0


start_step, elapsed0 = 0, 0.0
log_path, val_path = os.path.join(args.out, "log.jsonl"), os.path.join(args.out, "val.jsonl")
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
        for path in (log_path, val_path):
            kept = [r for r in data.read_jsonl(path) if r["step"] <= start_step] if os.path.exists(path) else []
            with open(path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
    print0(f"resumed from {ckpt_dir} at step {start_step}")
else:
    torch.manual_seed(args.seed + rank)  # dropout: different draws on each rank
    if master:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        open(log_path, "w").close()
        if args.val_every:
            open(val_path, "w").close()

# ---- training loop ----
pad_id = tokenizer.pad_token_id


# a bar on a terminal only: a log file already gets one line per step
pbar = tqdm(total=total_steps, initial=start_step, unit="step", disable=not (master and sys.stderr.isatty()),
            dynamic_ncols=True)
t_start, val_seconds = time.time(), 0.0  # validation's time is left out of the training time logged
if args.val_every and start_step == 0:
    val_seconds += validate(0, elapsed0)
order = None
share = global_batch // world_size  # prompts per process per optimizer step
for step in range(start_step, total_steps):
    t0 = time.time()
    epoch, i = divmod(step, steps_per_epoch)
    if order is None or i == 0:
        order = epoch_order(epoch)
    lr = get_lr(step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    step_users = [groups[j] for j in order[(i * users_per_step):((i + 1) * users_per_step)]]
    # this rank's micro batches: whole prompts (--per-prompt) or one user's prompts at a time
    if args.per_prompt:
        prompts_in_step = [head + tail + [a] for head, tails, answers in step_users for tail, a in zip(tails, answers)]
        micro_batches = [prompts_in_step[(m * world_size + rank) * args.batch_size:][:args.batch_size]
                         for m in range(accum)]
    else:
        micro_batches = step_users[rank::world_size]
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)  # this rank's summed prompt losses, tokens
    for micro, batch in enumerate(micro_batches):
        if ddp:  # reduce-scatter gradients only once, after the last micro-step
            model.set_requires_gradient_sync(micro == len(micro_batches) - 1)
        if args.per_prompt:
            sample_loss, tokens = llm.prompt_losses(model, batch, pad_id, args.loss), sum(len(r) for r in batch)
        else:
            head, tails, answers = batch
            sample_loss = llm.user_losses(model, head, tails, answers, pad_id, args.loss)
            tokens = len(tails) * (len(head) + 1) + sum(len(t) for t in tails)  # as if each prompt ran whole
        # the step's loss is the mean over the global batch; FSDP averages gradients over ranks, so each
        # rank divides by its own share of the batch
        (sample_loss.sum() / share).backward()
        loss_sum[0] += sample_loss.detach().sum().double()
        loss_sum[1] += tokens
    if ddp:
        dist.all_reduce(loss_sum)
        reshard_units()
    loss, tokens = loss_sum[0].item() / global_batch, int(loss_sum[1].item())
    if not math.isfinite(loss):
        print0(f"step {step + 1}: loss is {loss}; stopping. The last good checkpoint is in {ckpt_dir} "
               f"(if any was saved); try a lower --lr")
        llm.teardown_distributed()
        sys.exit(1)
    if args.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

    done, dt, elapsed = step + 1, time.time() - t0, elapsed0 + time.time() - t_start - val_seconds
    if master:
        record = {"step": done, "epoch": epoch + 1, "loss": loss, "lr": lr, "tokens": tokens,
                  "tokens_per_s": tokens / dt, "prompts_per_s": global_batch / dt, "elapsed": elapsed}
        with open(log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        print0(f"step {done}/{total_steps} | epoch {epoch + 1} | loss {loss:.4f} | lr {lr:.2e} | "
               f"{tokens / dt:.0f} tok/s | {global_batch / dt:.2f} prompts/s | {elapsed:.1f}s")
        pbar.update(1)
    if args.val_every and (done % args.val_every == 0 or done == total_steps):
        val_seconds += validate(done, elapsed)
    epoch_end = done % steps_per_epoch == 0
    if epoch_end or (args.save_every and done % args.save_every == 0) or done == args.stop_after:
        save_checkpoint(done, elapsed, epoch_end)
    if done == args.stop_after:
        print0(f"stopped after step {done} (--stop-after); continue with --resume")
        break
pbar.close()
print0(f"done: {args.out}")
llm.teardown_distributed()
