"""Raw MIND / Amazon-M2 files -> the paper's samples. (Being written; the file-format helpers below are final.)"""
import json
import os

BLOCK_SIZE = 5  # items per block (paper §5.2.2)
SPLITS = ("train", "val", "test")


def blocks(history, size=BLOCK_SIZE):
    """Cut a history into blocks of `size` items, oldest first; the last block may be partial."""
    return [history[i:i + size] for i in range(0, len(history), size)]


def read_jsonl(path):
    """Records of a JSON-lines file; a line that does not parse stops with the file and line number."""
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: expected one JSON object per line ({e})") from None
    return records


def load_items(data_dir):
    """{item id: item text} from DATA/items.jsonl."""
    return {r["id"]: r["text"] for r in read_jsonl(os.path.join(data_dir, "items.jsonl"))}


def load_split(data_dir, split):
    """Users of one split: [{"user", "history": [ids, oldest first], "target", "negatives": [ids]}]."""
    assert split in SPLITS, f"split must be one of {SPLITS}, got {split!r}"
    return read_jsonl(os.path.join(data_dir, f"{split}.jsonl"))


def load_meta(data_dir):
    with open(os.path.join(data_dir, "meta.json"), encoding="utf-8") as f:
        return json.load(f)


def load_summaries(path):
    """{user: summary} from a summaries file written by summarize.py (one JSON object per line)."""
    return {r["user"]: r["summary"] for r in read_jsonl(path)}
