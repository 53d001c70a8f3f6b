"""A tiny random Llama and a byte-level BPE tokenizer, built offline in about a second.

Tests use it wherever a real model would be too slow: the code paths are the real ones
(generate, LoRA, FSDP, scoring), only the weights are random.

    from tests.tiny import tiny_model_dir
    path = tiny_model_dir(tmp_path)   # a Hugging Face folder that llm.load_model reads
"""
import os

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# The same kind of template as SmolLM2-Instruct's, so chat rendering is exercised too.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Enough text that the words the prompts use ("Yes", "No", "Category", ...) become tokens of their own.
CORPUS = [
    "### User:\n### Assistant:\nYes No Yes No yes no",
    "Given the historical news reading data of a user, craft a concise summary of the user's preferences.",
    "Category: sports; SubCategory: football_nfl; Title: The team wins again",
    "Category: news; SubCategory: newspolitics; Title: Senate votes on the budget",
    "Title: Cotton bath towel; price: 9.99; brand: Keplin; color: Navy; material: cotton",
    "[Preference Summary] [Historical News] [Next News] [Historical Items] [Next Item] [News Reading Data]",
    "This user enjoys travel, sports and food. They also read about politics and finance.",
    "Please output 'Yes' or 'No'. predict whether the user will click on the given next news.",
] * 20


def build_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>", chat_template=CHAT_TEMPLATE)


def build_model(tokenizer, seed=0, hidden=64, layers=2, init_std=0.02):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         initializer_range=init_std, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def tiny_model_dir(root, seed=0, init_std=0.02):
    """Write the tiny model and tokenizer to root/tiny-llama once; return the folder.

    With the usual init_std of 0.02 the model answers every prompt with the same few tokens; tests that
    need outputs that differ from prompt to prompt (the summarizer's cache) draw the weights wider."""
    path = os.path.join(str(root), "tiny-llama" if init_std == 0.02 else f"tiny-llama-std{init_std}")
    if not os.path.exists(os.path.join(path, "config.json")):
        tokenizer = build_tokenizer()
        model = build_model(tokenizer, seed=seed, init_std=init_std)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    return path
