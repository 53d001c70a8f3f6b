"""Every prompt trsr sends to an LLM, as plain string constants, and tiny render_* functions that fill them.

# ---- Summarizer prompts (paper Figures 3, 4, 6, 7) ----

# ---- Recommender prompts (paper Figure 8) ----
"""
