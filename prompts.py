"""Every prompt trsr sends to an LLM, as plain string constants, and tiny render_* functions that fill them."""


# ---- Summarizer prompts (paper Figures 3, 4, 6, 7) ----
# News: Figures 6 (block), 4 (merging summaries) and 7 (update), word for word. Shopping: the paper does
# not print Figure 3's words, so the block and update instructions are the authors' own, word for word from
# their released code (preprocess/amazon/summary_generation.py in zhengzhi-1997/LLM-TRSR) -- "above" and
# the curly apostrophe in "user’s" included, as they wrote them. Only the headings follow trsr's layout.
# Sections are separated by one blank line; numbered items by a newline, numbered summaries by a blank
# line, as in the figures. `domain` is "news" (MIND) or "shopping" (Amazon-M2).

SUM_BLOCK = {  # Figure 6; Figure 3 (the authors' code)
    "news": ("Given the historical news reading data of a user, including the categories and titles of the news, "
             "craft a concise summary that captures the user's news reading preferences."),
    "shopping": ("Given the above historical purchase data of a user, including the titles, descriptions, and "
                 "attributes of the items they have bought, craft a concise summary that captures the user's "
                 "preferences, personality, and shopping habits."),
}
SUM_ITEMS = {"news": "[News Reading Data]", "shopping": "[Historical Purchase Data]"}

SUM_MERGE = (  # Figure 4; the same for both domains
    "Given a series of user preferences summaries arranged in chronological order, generate a concise summary "
    "that encapsulates the user's overall preference.\n"
    "Note that the newly generated summary of user preferences should be consistent with the format of the "
    "given summaries.")
SUM_SUMMARIES = "[User Preferences Summaries]"

SUM_UPDATE = {  # Figure 7; the authors' code
    "news": ("Given the following summary of a user's news reading preference, and a list of recent news they "
             "have read, analyze whether the user's news reading preferences and habits have changed. Taking "
             "into account both the existing summary of user preferences and the user's most recent reading "
             "records, generate an updated concise summary that captures the user's news reading preferences. "
             "Note that the newly generated summary of user preferences should be consistent with the format of "
             "the previous Preference Summary. It should serve as a complete summary of the user, rather than a "
             "separate narrative of the user's original summary and current preferences."),
    "shopping": ("Given the following summary of a user's preferences and a list of recent purchases they have "
                 "made, analyze whether the user's shopping preferences and habits have changed. Taking into "
                 "account both the existing summary of user preferences and the user’s most recent purchase "
                 "records, generate an updated concise summary that captures the user's preferences, personality, "
                 "and shopping habits. Note that the newly generated summary of user preferences should be "
                 "consistent with the format of the previous Preference Summary. It should serve as a complete "
                 "summary of the user, rather than a separate narrative of the user's original summary and current "
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
# The paper shows only the shopping (Amazon-M2) instruction, copied here word for word; the news (MIND)
# one is the same sentence with news words. When the summary or the recent items are left out (the
# ablations of §5.4, TALLRec mode) the instruction stops mentioning them, so it never points at a
# section that is not there.

DOMAINS = {"mind": "news", "amazon": "shopping"}  # meta.json "dataset" -> prompt domain

REC_INSTRUCTION = {
    ("news", "summary+items"): (
        "Given a preference summary of the user, and information related to the historical news the user "
        "has read, predict whether the user will click on the given next news. Note that the preference "
        "summary captures long-term interests, while the recent news indicate short term interests. Both of "
        "them should be holistically considered for a more comprehensive understanding of user behavior. "
        "Please output 'Yes' or 'No'."),
    ("news", "summary"): (
        "Given a preference summary of the user, predict whether the user will click on the given next news. "
        "Note that the preference summary captures the user's long-term interests. Please output 'Yes' or 'No'."),
    ("news", "items"): (
        "Given information related to the historical news the user has read, predict whether the user will "
        "click on the given next news. Please output 'Yes' or 'No'."),
    ("shopping", "summary+items"): (
        "Given a preference summary of the user, and information related to the historical items the user "
        "has purchased, predict whether the user will click on the given next product. Note that the "
        "preference summary captures long-term interests, while the recent items indicate short term "
        "interests. Both of them should be holistically considered for a more comprehensive understanding "
        "of user behavior. Please output 'Yes' or 'No'."),
    ("shopping", "summary"): (
        "Given a preference summary of the user, predict whether the user will click on the given next "
        "product. Note that the preference summary captures the user's long-term interests. Please output "
        "'Yes' or 'No'."),
    ("shopping", "items"): (
        "Given information related to the historical items the user has purchased, predict whether the user "
        "will click on the given next product. Please output 'Yes' or 'No'."),
}
REC_SECTIONS = {  # (history heading, candidate heading)
    "news": ("[Historical News]", "[Next News]"),
    "shopping": ("[Historical Items]", "[Next Item]"),
}
REC_SUMMARY = "[Preference Summary]"
REC_USER = "### User:\n"
# The answer word comes right after this newline, with no space: "\nYes" tokenizes differently from
# "\n Yes", and training and scoring must both see the first form (trsr.answer_token_ids checks it).
REC_ASSISTANT = "### Assistant:\n"
ANSWER_YES, ANSWER_NO = "Yes", "No"


def render_recommender_prefix(domain, summary, history):
    """Everything before the candidate's text: instruction, summary, numbered history items, candidate
    heading. summary=None leaves the summary section out; history=[] leaves the history section out."""
    assert summary is not None or history, "a recommender prompt needs a summary, history items, or both"
    kind = "summary+items" if summary is not None and history else ("summary" if summary is not None else "items")
    history_heading, candidate_heading = REC_SECTIONS[domain]
    parts = [REC_USER + REC_INSTRUCTION[(domain, kind)]]
    if summary is not None:
        parts.append(f"{REC_SUMMARY}\n{summary}")
    if history:
        parts.append(history_heading + "\n" + "\n".join(f"{i}. {text}" for i, text in enumerate(history, 1)))
    return "\n\n".join(parts) + f"\n\n{candidate_heading}\n"


def render_recommender_suffix(candidate):
    """The candidate's text and the assistant line; the answer word follows it directly."""
    return f"{candidate}\n\n{REC_ASSISTANT}"


def render_recommender(domain, summary, history, candidate, answer=None):
    """The whole prompt of the paper's Figure 8; with answer=None it ends where the answer is scored."""
    return (render_recommender_prefix(domain, summary, history) + render_recommender_suffix(candidate)
            + (answer or ""))
