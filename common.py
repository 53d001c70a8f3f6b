"""What every trsr script repeats, none of it about models: printing on rank 0, progress lines, and the
append-only JSON-lines files that make an interrupted stage resume where it stopped.

It imports no torch, so that data.py, which needs none, can use it too; what the LLM stages share (processes,
models, the recommender's prompt and score) is in llm.py.

    from common import print0, progress
    bar = progress(len(users), "summarize hierarchical", "users", show=rank == 0)
"""
import json
import os
import sys
import time

from tqdm import tqdm


def print0(*args):
    """print on rank 0 only, flushed; tqdm.write keeps a terminal's progress bar below the printed lines."""
    if int(os.environ.get("RANK", 0)) == 0:
        tqdm.write(" ".join(str(a) for a in args))
        sys.stdout.flush()


# ---- Progress: a bar on a terminal, one plain line every 10 s in a log file ----

def progress(total, desc, unit, show=True, every=10.0):
    """A progress bar on a terminal, plain lines in a log file, nothing when show is False (other ranks)."""
    if not show:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
    return LogProgress(total, desc, unit, every)


class LogProgress:
    """tqdm's update / set_postfix_str / close, written as one plain line every `every` seconds and at the end:
    what a log file should get instead of a bar redrawn with carriage returns."""

    def __init__(self, total, desc, unit, every=10.0):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.done, self.postfix = 0, ""
        self.t0 = self.last = time.time()

    def update(self, n=1):
        self.done += n
        if time.time() - self.last >= self.every or self.done == self.total:
            self.write()

    def set_postfix_str(self, text):  # news within an item (a batch generated): a line if one is due
        self.postfix = text
        if time.time() - self.last >= self.every:
            self.write()

    def write(self):
        self.last = time.time()
        rate = self.done / max(self.last - self.t0, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        print(f"{self.desc}: {amount(self.done)}/{amount(self.total)} {self.unit}, {rate:,.3g} {self.unit}/s, "
              f"{left:.0f} s left" + (f", {self.postfix}" if self.postfix else ""), file=sys.stderr, flush=True)

    def close(self):
        if self.done != self.total:  # stopped early: say where
            self.write()


def amount(x):
    """A count as 12,345; a measure (MiB read, say) to one decimal."""
    return f"{x:,}" if isinstance(x, int) else f"{x:,.1f}"


# ---- Files: append-only JSON lines that survive a kill -9 ----

def open_append(path):
    """A file descriptor that appends. Each record goes out in one os.write, so ranks and runs sharing the
    file never interleave within a line, and a kill -9 loses at most the line being written."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    size = os.fstat(fd).st_size
    if size:  # end a line a killed run left unfinished, so the next record starts on a line of its own
        with open(path, "rb") as f:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                os.write(fd, b"\n")
    return fd


def append(fd, record):
    os.write(fd, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))


def read_appended(path, key):
    """{record[key]: record} from a file written with append(); later records win. A line cut short by a
    killed run does not parse: it is skipped with a note, and its work is simply done again."""
    records = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                try:
                    record = json.loads(line)
                    records[record[key]] = record
                except (json.JSONDecodeError, KeyError, TypeError):
                    if line.strip():
                        print(f"{path}:{lineno}: skipping an unreadable line (cut short by a killed run?); "
                              f"its work will be done again")
    return records


def merge_parts(path, parts, key, order):
    """How the ranks' part files become one: the records of `path` (what an earlier run finished) and of the
    `parts` (read_appended's; a later file wins), written to `path` in the order of the keys in `order`, then
    the parts removed. Written aside and renamed, so `path` is always whole."""
    records = {}
    for source in [path] + parts:
        records.update(read_appended(source, key))
    missing = [k for k in order if k not in records]
    if missing:
        raise ValueError(f"{path}: no record for {key} {missing[0]!r} ({len(missing)} missing) in {parts}")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(records[k], ensure_ascii=False) + "\n" for k in order)
    os.replace(path + ".tmp", path)
    for part in parts:
        os.remove(part)
    return records
