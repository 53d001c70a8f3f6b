"""What the stages share: loading a model and tokenizer, building a recommender prompt within a token
budget, scoring yes/no. Run as a script, it runs the whole pipeline end to end.

# ---- Models ----

# ---- Recommender prompt, yes/no tokens ----

# ---- Main pipeline ----
"""
