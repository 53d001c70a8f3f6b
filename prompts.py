"""Every prompt trsr sends to an LLM, as plain string constants, and tiny render_* functions that fill them.

# ---- Summarizer prompts (paper Figures 3, 4, 6, 7) ----

# ---- Recommender prompts (paper Figure 8) ----
"""


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
