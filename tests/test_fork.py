"""The fork path: the example of docs/adding-a-paradigm.md, pasted into summarize.py exactly as the page shows
it, reaches the results table through `trsr.py --paradigms` without touching any other file."""
import json
import os
import re
import shutil
import subprocess
import sys

from tests.tiny import tiny_model_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def docs_paradigm_example():
    """The first python block of docs/adding-a-paradigm.md."""
    with open(os.path.join(ROOT, "docs", "adding-a-paradigm.md"), encoding="utf-8") as f:
        return re.search(r"```python\n(.*?)```", f.read(), re.S).group(1)


def test_a_paradigm_added_as_the_docs_show_reaches_the_table(tmp_path):
    fork = tmp_path / "fork"
    fork.mkdir()
    for name in os.listdir(ROOT):
        if name.endswith(".py"):
            shutil.copy(os.path.join(ROOT, name), fork / name)
    summarize = (fork / "summarize.py").read_text()
    table = re.search(r"^PARADIGMS = \{\n.*?^\}\n", summarize, re.M | re.S).group(0)
    example = docs_paradigm_example()
    assert "def flat(" in example and table.strip() in example.replace('    "flat": flat,\n', "")
    (fork / "summarize.py").write_text(summarize.replace(table, example))  # the function and the new table

    model = tiny_model_dir(tmp_path)
    out = tmp_path / "run"
    cmd = [sys.executable, "trsr.py", "--paradigms", "flat", "--out", str(out), "--model", model,
           "--summarizer", model, "--users", "120", "--split", "6,0,4"]
    run = subprocess.run(cmd, cwd=fork, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with open(out / "table" / "results.json") as f:
        results = json.load(f)
    assert list(results["methods"])[:3] == ["LLM-TRSR-Flat", "TALLRec mode", "zero-shot"]
    assert results["methods"]["LLM-TRSR-Flat"]["users"] == 4
    summaries = [json.loads(line) for line in open(out / "summaries-flat.jsonl")]
    assert summaries and all(r["paradigm"] == "flat" and len(r["steps"]) == 1 for r in summaries)
    assert "summarize.py --data" in run.stdout and "--paradigm flat" in run.stdout
