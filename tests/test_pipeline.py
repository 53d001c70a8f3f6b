"""trsr.py end to end with a tiny random model: every stage runs, the table and the plot come out, the log
is clean, a second run reuses every finished stage, and a third adds popular negatives' table beside it."""
import json

import trsr
from tests.tiny import tiny_model_dir


def test_pipeline_runs_every_stage_once_and_reuses_them(tmp_path, capfd):
    model = tiny_model_dir(tmp_path)
    argv = ["--out", str(tmp_path / "run"), "--model", model, "--summarizer", model, "--users", "150", "--split", "8,2,4"]
    trsr.pipeline(argv)
    out, err = capfd.readouterr()  # the stages' output too: they run as child processes
    with open(tmp_path / "run" / "table" / "results.json") as f:
        results = json.load(f)
    assert list(results["methods"]) == ["LLM-TRSR-Hierarchical", "LLM-TRSR-Recurrent", "TALLRec mode", "zero-shot",
                                        "NCF", "DIN", "DIEN", "GRU4Rec", "NARM", "SASRec", "CORE",
                                        "summary probe: hierarchical (TF-IDF)", "summary probe: recurrent (TF-IDF)",
                                        "text similarity (TF-IDF)", "popularity", "random"]
    assert results["users"] == 4
    for command in ("generate.py mind", "data.py --dataset mind", "summarize.py", "train.py", "evaluate.py", "baselines.py"):
        assert command in out  # each stage's command is printed before it runs
    assert "| LLM-TRSR-Recurrent | 4 |" in out
    assert (tmp_path / "run" / "results.png").stat().st_size > 10_000
    # a log file gets plain lines: no warning a user cannot act on, no bar redrawn with carriage returns
    assert "Warning" not in out + err and "\r" not in out + err, [l for l in (out + err).splitlines() if "Warning" in l]
    # a second run finds every stage up to date and runs nothing
    trsr.pipeline(argv)
    out = capfd.readouterr().out
    assert " $ " not in out and out.count("up to date") == 13
    # both protocols: the same trained models scored on a second build whose test negatives are popularity-drawn;
    # only that build, its scoring, its baselines and its table run
    trsr.pipeline(argv + ["--eval-negatives", "uniform,popular"])
    out = capfd.readouterr().out
    ran = [line.split("]")[0][1:] for line in out.splitlines() if " $ " in line]
    assert ran == ["data-popular", "eval-hierarchical-recent3-popular", "eval-recurrent-recent3-popular",
                   "eval-tallrec-popular", "eval-zero-shot-popular", "baselines-popular", "table-popular"], ran
    assert out.count("up to date") == 13
    with open(tmp_path / "run" / "table-popular" / "results.json") as f:
        popular = json.load(f)
    assert list(popular["methods"]) == list(results["methods"]) and popular["users"] == 4
    assert popular["data_hash"] != results["data_hash"]  # other candidates for the same users
    assert (tmp_path / "run" / "results-popular.png").stat().st_size > 10_000


def test_the_cpu_preset_runs_every_llm_stage_in_bf16(tmp_path, monkeypatch):
    """The cpu preset passes --dtype bfloat16 to each stage that loads an LLM (summarize, train, evaluate) and to
    no other; --dtype overrides it, and the default preset passes none (auto: fp32 on CPUs, bf16 on GPUs)."""
    class Stop(Exception):
        pass

    def commands(argv):
        seen = {}

        def run(self, name, cmd, output, after=(), resume=None):
            if name == "table":
                raise Stop
            seen[name] = cmd
        monkeypatch.setattr(trsr.Stages, "run", run)
        try:
            trsr.pipeline(argv + ["--out", str(tmp_path / "run")])
        except Stop:
            pass
        return seen

    seen = commands(["--preset", "cpu"])
    llm_stages = [n for n in seen if n.split("-")[0] in ("summarize", "train", "eval")]
    assert len(llm_stages) == 2 + 3 + 4, seen.keys()
    for name, cmd in seen.items():
        flags = " ".join(cmd)
        assert ("--dtype bfloat16" in flags) == (name in llm_stages), (name, flags)
    assert all("--dtype float32" in " ".join(commands(["--preset", "cpu", "--dtype", "float32"])[n]) for n in llm_stages)
    assert not any("--dtype" in " ".join(cmd) for cmd in commands([]).values())
