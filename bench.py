"""Side-by-side measurements of trsr's stages; prints a table and writes bench.json.

# ---- Data building ----

# ---- Summarization ----

# ---- Training ----

# ---- Scoring ----
"""
