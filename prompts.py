"""Every prompt trsr sends to an LLM, as plain string constants, and tiny render_* functions that fill them."""


# ---- Summarizer prompts (paper Figures 3, 4, 6, 7) ----
# Figures 6 (news block), 4 (merging summaries) and 7 (news update) are copied word for word. Figure 3's
# text (a shopping block) is not in the paper's text, so the shopping prompts are the news ones with
# shopping words, which is how §4.1.2 says the prompts carry over between domains. Sections are separated
# by one blank line; numbered items by a newline, numbered summaries by a blank line, as in the figures.
# `domain` is "news" (MIND) or "shopping" (Amazon-M2).

SUM_BLOCK = {  # Figure 6; Figure 3
    "news": ("Given the historical news reading data of a user, including the categories and titles of the news, "
             "craft a concise summary that captures the user's news reading preferences."),
    "shopping": ("Given the historical purchase data of a user, including the titles and attributes of the "
                 "products, craft a concise summary that captures the user's shopping preferences."),
}
SUM_ITEMS = {"news": "[News Reading Data]", "shopping": "[Purchase Data]"}

SUM_MERGE = (  # Figure 4; the same for both domains
    "Given a series of user preferences summaries arranged in chronological order, generate a concise summary "
    "that encapsulates the user's overall preference.\n"
    "Note that the newly generated summary of user preferences should be consistent with the format of the "
    "given summaries.")
SUM_SUMMARIES = "[User Preferences Summaries]"

SUM_UPDATE = {  # Figure 7
    "news": ("Given the following summary of a user's news reading preference, and a list of recent news they "
             "have read, analyze whether the user's news reading preferences and habits have changed. Taking "
             "into account both the existing summary of user preferences and the user's most recent reading "
             "records, generate an updated concise summary that captures the user's news reading preferences. "
             "Note that the newly generated summary of user preferences should be consistent with the format of "
             "the previous Preference Summary. It should serve as a complete summary of the user, rather than a "
             "separate narrative of the user's original summary and current preferences."),
    "shopping": ("Given the following summary of a user's shopping preference, and a list of recent products "
                 "they have purchased, analyze whether the user's shopping preferences and habits have changed. "
                 "Taking into account both the existing summary of user preferences and the user's most recent "
                 "purchase records, generate an updated concise summary that captures the user's shopping "
                 "preferences. Note that the newly generated summary of user preferences should be consistent "
                 "with the format of the previous Preference Summary. It should serve as a complete summary of "
                 "the user, rather than a separate narrative of the user's original summary and current "
                 "preferences."),
}
SUM_PREVIOUS = "[Previous Preference Summary]"
SUM_RECENT_ITEMS = {"news": "[Recent News Reading Data]", "shopping": "[Recent Purchase Data]"}

# How a rendered prompt reaches the summarizer. "paper": the paper's plain-text frame. "chat": the
# tokenizer's own chat template, one user turn and the opening of the assistant's, which is what an
# instruction-tuned model was trained on (for SmolLM2 this includes the template's default system line).
SUM_FRAME = "### User:\n{prompt}\n\n### Assistant:\n"
SUM_FORMATS = ("chat", "paper")

# What a summary becomes when the model's output is empty once cleaned (it ended at once, or only
# started a new turn): a neutral sentence, so that later prompts never show an empty section.
EMPTY_SUMMARY = "No clear preference could be inferred from this user's history."


def numbered(texts, sep="\n"):
    return sep.join(f"{i}. {text}" for i, text in enumerate(texts, 1))


def render_block(domain, items):
    """Figures 3 and 6: summarize one block of item texts."""
    return f"{SUM_BLOCK[domain]}\n\n{SUM_ITEMS[domain]}\n{numbered(items)}"


def render_merge(summaries):
    """Figure 4: merge summaries, oldest first, into one."""
    return f"{SUM_MERGE}\n\n{SUM_SUMMARIES}\n" + numbered(summaries, sep="\n\n")


def render_update(domain, summary, items):
    """Figure 7: update the previous summary with the next block of item texts."""
    return f"{SUM_UPDATE[domain]}\n\n{SUM_PREVIOUS}\n{summary}\n\n{SUM_RECENT_ITEMS[domain]}\n{numbered(items)}"


def render_frame(prompt, fmt, tokenizer=None):
    """A rendered prompt in the chosen frame, as the exact text the model is given."""
    if fmt == "paper":
        return SUM_FRAME.format(prompt=prompt)
    assert fmt == "chat", f"format must be one of {SUM_FORMATS}, got {fmt!r}"
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


# ---- Recommender prompts (paper Figure 8) ----

DOMAINS = {"mind": "news", "amazon": "shopping"}  # meta.json "dataset" -> prompt domain
