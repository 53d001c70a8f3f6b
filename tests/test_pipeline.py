"""trsr.py end to end with a tiny random model: every stage runs, the table comes out, and a second run
reuses every finished stage."""
import json

import trsr
from tests.tiny import tiny_model_dir


def test_pipeline_runs_every_stage_once_and_reuses_them(tmp_path, capsys):
    model = tiny_model_dir(tmp_path)
    argv = ["--out", str(tmp_path / "run"), "--model", model, "--summarizer", model, "--users", "150", "--split", "8,2,4"]
    trsr.pipeline(argv)
    out = capsys.readouterr().out
    with open(tmp_path / "run" / "table" / "results.json") as f:
        results = json.load(f)
    assert list(results["methods"]) == ["LLM-TRSR-Hierarchical", "LLM-TRSR-Recurrent", "TALLRec mode", "zero-shot",
                                        "text similarity (TF-IDF)", "popularity", "random"]
    assert results["users"] == 4
    for command in ("data.py --generate mind", "summarize.py", "train.py", "evaluate.py"):
        assert command in out  # each stage's command is printed before it runs
    assert "| LLM-TRSR-Recurrent | 4 |" in out
    # a second run finds every stage up to date and runs nothing
    trsr.pipeline(argv)
    out = capsys.readouterr().out
    assert " $ " not in out and out.count("up to date") == 12
