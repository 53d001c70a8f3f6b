"""The main job: every stage of LLM-TRSR end to end, each run as the command a user would type, then one
Table 2-style table and its plot.

$ python trsr.py                                  # generated MIND sample, every stage, one table
$ python trsr.py --preset cpu                     # 200 training users at 1:5, 100 test users: where it learns
$ python trsr.py --preset cpu --eval-negatives popular   # negatives that popularity alone cannot rank below
$ python trsr.py --preset cpu --eval-negatives uniform,popular   # the same recommenders under both, two tables
$ python trsr.py --dataset amazon --recent 0,1,3,5
$ python trsr.py --paradigms hierarchical,recurrent,flat     # once flat is in summarize.PARADIGMS (README)
$ python trsr.py --preset paper --raw MINDlarge_train --summarizer upstage/llama-30b-instruct-2048 \
      --summarizer-quantize 8bit --model meta-llama/Llama-2-7b-hf --nproc 8

The stages are scripts of their own (generate.py, data.py, summarize.py, train.py, evaluate.py, baselines.py);
what they share is in common.py and llm.py. This file only runs them.
"""
import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

import matplotlib
matplotlib.use("Agg")  # draws to files: no display needed
import matplotlib.pyplot as plt

import baselines
from llm import DEFAULT_MODEL

# ---- The pipeline ----
# `python trsr.py` runs every stage as its own command, the way a user would run it by hand, and prints each
# command first. A stage whose command has not changed since it finished is skipped; one that was interrupted
# runs again with the same command and picks up where it stopped (summarize.py's cache, train.py --resume,
# evaluate.py's scores); one whose command changed starts afresh. The stage scripts' defaults are the paper's
# settings; the presets trade them for minutes on a CPU.

# On CPUs the presets train on the answer token only, at 10x the paper's rate: what a 135M recommender learns
# from in a hundred steps. The shared-prefix path runs one user's prompts per micro-step; accumulated over 4
# prompts at 1:1 (default) or 12 at 1:5 (cpu), an optimizer step is 2 users. The summarizer runs 32 users in
# lockstep: the default preset's hierarchical stage took 95 s in batches of 32 prompts against 111 s in batches
# of 16, on 2 cores, with the same summaries.
# The cpu preset runs its models in bf16 (the paper's dtype on GPUs): on a CPU with native bf16 matmuls (AVX512-BF16
# or AMX), measured on the AMD EPYC of the README (bench.py --only cpu_bf16), training is 1.40x as fast as in fp32,
# scoring 1.64x and summarizing 1.78x; scores are read from fp32 logits all the same (llm.fp32_logits). On a CPU
# without them bf16 is emulated and slower than fp32: pass --dtype float32 there.
CPU_TRAINING = ["--epochs", "1", "--loss", "answer", "--lr", "1e-3", "--batch-size", "1"]
CPU_SUMMARIES = ["--max-new-tokens", "32", "--splits", "train,test", "--batch-size", "32"]
PRESETS = {
    # every stage for real on a small sample, in minutes; its numbers are mostly noise
    "default": {"users": 200, "split": (20, 0, 10), "data": [], "summarize": CPU_SUMMARIES,
                "train": CPU_TRAINING + ["--grad-accum", "4"], "dtype": "auto"},
    # ten times the default's training users, each with 5 negatives (a negative is cheap next to a summarized
    # user: it adds a ~32-token suffix to the shared prefix), and 100 test users for narrower intervals; the
    # setting learned on validation users of another generated sample (docs/learning.png). 10 negatives learned
    # more there (val Recall@3 0.30 against 0.25, both beyond random) but took the whole run past the hour.
    "cpu": {"users": 800, "split": (200, 0, 100), "data": ["--train-negatives", "5"], "summarize": CPU_SUMMARIES,
            "train": CPU_TRAINING + ["--grad-accum", "12"], "dtype": "bfloat16"},
    # the paper's setting: real data, 10,000 / 1,000 / 1,000 users, every stage at its script's defaults
    # (Llama-2-7b recommender, 8 epochs, accumulation 64); pass --summarizer and --model, and --nproc for GPUs
    "paper": {"users": 0, "split": (10_000, 1_000, 1_000), "data": [], "summarize": [], "train": [], "dtype": "auto"},
}
CONVENTIONAL = list(baselines.MODELS)  # Table 2's conventional models, in its order
HERE = os.path.dirname(os.path.abspath(__file__))  # the stage scripts' folder


def pipeline_parser():
    parser = argparse.ArgumentParser(description="LLM-TRSR end to end: data, the summarization paradigms, "
                                     "training, evaluation against baselines, one table")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--dataset", default="mind", choices=["mind", "amazon"])
    parser.add_argument("--raw", help="folder with the real raw files (default: generate a sample)")
    parser.add_argument("--out", help="run folder (default: runs/<preset>-<dataset>)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the recommender (the paper: meta-llama/Llama-2-7b-hf)")
    parser.add_argument("--summarizer", default=DEFAULT_MODEL,
                        help="the summarizer (the paper: upstage/llama-30b-instruct-2048)")
    parser.add_argument("--summarizer-quantize", default="none", choices=["none", "8bit", "4bit"],
                        help="the paper: 8bit")
    parser.add_argument("--paradigms", default="hierarchical,recurrent",
                        help="summarization paradigms of summarize.PARADIGMS, one recommender each; the first one's "
                             "summaries also serve the zero-shot row")
    parser.add_argument("--recent", default="3", help="recent items in the prompt; a list such as 0,1,3,5 trains one "
                        "recommender per value and plots the paper's Figure 9")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"],
                        help="the summarizer's and the recommender's dtype in every LLM stage (default: the preset's; "
                             "auto is bf16 on GPUs and fp32 on CPUs, the cpu preset's bfloat16)")
    parser.add_argument("--nproc", type=int, default=1, help="processes per stage (torchrun), e.g. the GPUs of a node")
    parser.add_argument("--users", type=int, help="override the preset: users of the generated sample (Amazon-M2: "
                        "about this many users, from 80 times as many sessions)")
    parser.add_argument("--split", help="override the preset: train,val,test users, e.g. 60,10,30")
    parser.add_argument("--eval-negatives", default="uniform",
                        help="the test users' 20 negatives: uniform (the paper's) or popular (popularity-weighted, "
                             "data.py), or both as uniform,popular: the same trained models scored under each, one "
                             "table each (the first one's in table/, the other's in table-popular/); popular alone "
                             "runs in its own folder, runs/<preset>-<dataset>-popular")
    parser.add_argument("--seed", type=int, default=0)
    return parser


class Stages:
    """Runs each stage's command unless it already finished with the same inputs. A stage's stamp is its
    command plus the stamps of the stages it reads, so a changed upstream stage reruns everything below it."""

    def __init__(self, run_dir):
        self.stamps = os.path.join(run_dir, "stages")
        os.makedirs(self.stamps, exist_ok=True)
        self.seconds = {}  # what ran now, and for how long

    def run(self, name, cmd, output, after=(), resume=None):
        stamp = json.dumps([cmd] + [open(os.path.join(self.stamps, a + ".done")).read() for a in after])
        done, started = os.path.join(self.stamps, name + ".done"), os.path.join(self.stamps, name + ".started")
        if os.path.exists(done) and open(done).read() == stamp and os.path.exists(output):
            print(f"[{name}] up to date: {output}")
            return
        if os.path.exists(output) and not (os.path.exists(started) and open(started).read() == stamp):
            print(f"[{name}] {output} came from another command: starting it afresh")
            shutil.rmtree(output) if os.path.isdir(output) else os.remove(output)
        elif resume and os.path.exists(resume[0]):
            cmd = cmd + [resume[1]]  # same command, interrupted after a checkpoint: go on from it
        with open(started, "w") as f:
            f.write(stamp)
        print(f"\n[{name}] $ {shlex.join(cmd)}", flush=True)
        t0 = time.time()
        subprocess.run(cmd, check=True, cwd=HERE)
        self.seconds[name] = round(time.time() - t0, 1)
        with open(done, "w") as f:
            f.write(stamp)


def row_name(paradigm, recent, main_recent):
    """The table row of the recommender trained on `paradigm`'s summaries with `recent` recent items: the
    paper's name for the main number of recent items, and the others' marked (the paper's Figure 9)."""
    return f"LLM-TRSR-{paradigm.capitalize()}" + ("" if recent == main_recent else f" (recent {recent})")


def pipeline(argv=None):
    args = pipeline_parser().parse_args(argv)
    preset = dict(PRESETS[args.preset])
    if args.users:
        preset["users"] = args.users
    if args.split:
        preset["split"] = tuple(int(n) for n in args.split.split(","))
    dtype = args.dtype or preset["dtype"]
    llm_flags = [] if dtype == "auto" else ["--dtype", dtype]  # what every stage that loads an LLM gets
    if args.preset == "paper" and not args.raw:
        raise SystemExit("--preset paper needs the real files: --raw FOLDER")
    protocols = args.eval_negatives.split(",")
    if not protocols or set(protocols) - {"uniform", "popular"} or len(set(protocols)) < len(protocols):
        raise SystemExit(f"--eval-negatives {args.eval_negatives}: expected uniform, popular or a list of both")
    suffix = {p: "" if p == protocols[0] else f"-{p}" for p in protocols}  # the first protocol's folders have none
    out = args.out or os.path.join("runs", f"{args.preset}-{args.dataset}" + ("-popular" if protocols == ["popular"]
                                                                              else ""))
    paradigms, recents = args.paradigms.split(","), [int(r) for r in args.recent.split(",")]
    main_recent = 3 if 3 in recents else recents[0]  # the others' rows are named "(recent N)"
    py = [sys.executable]
    launch = py if args.nproc == 1 else py + ["-m", "torch.distributed.run", "--standalone",
                                              f"--nproc_per_node={args.nproc}"]
    stages, t_start = Stages(out), time.time()

    raw = args.raw or os.path.join(out, "raw")
    if not args.raw:  # Amazon-M2: about 1 session in 80 is a UK session of 10-25 items, as in the real file
        n = preset["users"] * (80 if args.dataset == "amazon" else 1)
        stages.run("generate", py + ["generate.py", args.dataset, "--out", raw, "--users", str(n),
                                     "--seed", str(args.seed)], raw)
    n_train, n_val, n_test = preset["split"]
    data_dirs = {p: os.path.join(out, "data" + suffix[p]) for p in protocols}
    for p in protocols:  # the same users and training negatives in each build; only the eval users' negatives differ
        stages.run("data" + suffix[p], py + [
            "data.py", "--dataset", args.dataset, "--raw", raw, "--out", data_dirs[p], "--seed", str(args.seed),
            "--n-train", str(n_train), "--n-val", str(n_val), "--n-test", str(n_test)] + preset["data"] + (
            [] if p == "uniform" else ["--eval-negatives", p]), data_dirs[p], after=[] if args.raw else ["generate"])
    data_dir = data_dirs[protocols[0]]  # what the summarizer and the recommenders read
    rows = []  # each LLM row, in the table's order: (tag, the stage it needs, evaluate.py's flags around --split)
    for paradigm in paradigms:
        summaries = os.path.join(out, f"summaries-{paradigm}.jsonl")
        stages.run(f"summarize-{paradigm}", launch + [
            "summarize.py", "--data", data_dir, "--paradigm", paradigm, "--out", summaries, "--model", args.summarizer,
            "--quantize", args.summarizer_quantize, "--seed", str(args.seed)] + preset["summarize"] + llm_flags,
            summaries, after=["data"])
        for recent in recents:
            tag = f"{paradigm}-recent{recent}"
            rec = os.path.join(out, f"rec-{tag}")
            stages.run(f"train-{tag}", launch + [
                "train.py", "--data", data_dir, "--summaries", summaries, "--out", rec, "--model", args.model,
                "--recent", str(recent), "--seed", str(args.seed)] + preset["train"] + llm_flags,
                rec, resume=(os.path.join(rec, "last"), "--resume"), after=[f"summarize-{paradigm}"])
            rows.append((tag, f"train-{tag}", ["--summaries", summaries, "--adapter", rec],
                         ["--name", row_name(paradigm, recent, main_recent)]))
    rec = os.path.join(out, "rec-tallrec")
    stages.run("train-tallrec", launch + ["train.py", "--data", data_dir, "--out", rec, "--model", args.model,
                                          "--tallrec", "--seed", str(args.seed)] + preset["train"] + llm_flags,
               rec, resume=(os.path.join(rec, "last"), "--resume"), after=["data"])
    rows.append(("tallrec", "train-tallrec", ["--adapter", rec], ["--name", "TALLRec mode"]))
    # the base model, with the first paradigm's summaries in its prompt
    rows.append(("zero-shot", f"summarize-{paradigms[0]}", [
        "--summaries", os.path.join(out, f"summaries-{paradigms[0]}.jsonl"), "--model", args.model],
        ["--name", "zero-shot", "--recent", str(main_recent)]))
    # the summary probes: each paradigm's summaries ranked against the candidates by TF-IDF alone, no LLM
    probes = [f"{p}={os.path.join(out, f'summaries-{p}.jsonl')}" for p in paradigms]

    for p in protocols:  # each protocol's candidates scored by the same trained models: one table each
        s, after_data = suffix[p], [f"data{suffix[p]}"] if suffix[p] else []
        evals = []  # evaluate.py's folders of the LLM rows
        for tag, needs, before, name in rows:
            ev = os.path.join(out, f"eval-{tag}{s}")
            stages.run(f"eval-{tag}{s}", launch + ["evaluate.py", "--data", data_dirs[p]] + before + [
                "--split", "test", "--out", ev] + name + llm_flags, ev, after=[needs] + after_data)
            evals.append(ev)
        conventional = os.path.join(out, "baselines" + s)  # trained on the same users, ranking the same candidates
        stages.run("baselines" + s, py + ["baselines.py", "--data", data_dirs[p], "--out", conventional,
                                          "--models", ",".join(CONVENTIONAL), "--seed", str(args.seed)],
                   conventional, after=["data" + s])
        table = os.path.join(out, "table" + s)
        stages.run("table" + s, py + [
            "evaluate.py", "--data", data_dirs[p], "--split", "test", "--out", table, "--baselines-only",
            "--probe-summaries"] + probes + ["--include"] + evals + [os.path.join(conventional, m)
                                                                     for m in CONVENTIONAL],
            table, after=[f"eval-{tag}{s}" for tag, *_ in rows] + ["baselines" + s])

        with open(os.path.join(table, "results.json")) as f:
            results = json.load(f)
        plot_results(results, os.path.join(out, f"results{s}.png"))
        if len(recents) > 1:
            plot_recent(results, paradigms, recents, main_recent, os.path.join(out, f"recent{s}.png"))
        print(f"\n{p} negatives:\n{open(os.path.join(table, 'results.md')).read()}")
    print(f"trsr: {args.preset} preset on {args.dataset} in {time.time() - t_start:.0f} s (stages run now: "
          f"{stages.seconds}); everything is in {out}/")


def plot_results(results, path):
    """One panel per metric (Recall@K, MRR@K), one bar per method with its 95% interval, the table's first row
    on top. Colours: LLM-TRSR, the other LLM rows, the conventional recommenders, the cheap rankers (and the
    summary probes)."""
    metrics = [f"{m}@{k}" for m in ("Recall", "MRR") for k in (3, 5, 10)]
    methods = list(results["methods"])[::-1]
    cheap, other_llm = ("random", "popularity", "text similarity (TF-IDF)"), ("TALLRec mode", "zero-shot")
    colours = ["C0" if n.startswith("LLM-TRSR") else "C1" if n in other_llm
               else "C7" if n in cheap or n.startswith("summary probe") else "C2" for n in methods]
    fig, axes = plt.subplots(2, 3, figsize=(13, 2 + 0.5 * len(methods)), sharey=True)
    for ax, metric in zip(axes.flat, metrics):
        m = [results["methods"][name]["metrics"][metric] for name in methods]
        ax.barh(range(len(methods)), [x[0] for x in m], xerr=[[x[0] - x[1] for x in m], [x[2] - x[0] for x in m]],
                color=colours, capsize=2)
        ax.set_yticks(range(len(methods)), methods)
        ax.set_xlim(0, 1)
        ax.set_title(metric)
    fig.suptitle(f"{results['split']}, {results['users']} users, mean and 95% bootstrap interval")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


def plot_recent(results, paradigms, recents, main_recent, path):
    """The paper's Figure 9: Recall@K against the number of recent items, one panel per paradigm."""
    fig, axes = plt.subplots(1, len(paradigms), figsize=(5 * len(paradigms), 4), sharey=True, squeeze=False)
    for ax, paradigm in zip(axes[0], paradigms):
        method = row_name(paradigm, main_recent, main_recent)
        for k in (3, 5, 10):
            names = [row_name(paradigm, r, main_recent) for r in recents]
            ax.plot(recents, [results["methods"][n]["metrics"][f"Recall@{k}"][0] for n in names], marker="o",
                    label=f"Recall@{k}")
        ax.set_title(method)
        ax.set_xlabel("recent items in the prompt")
        ax.set_xticks(recents)
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def plot_learning(curves, lines, path):
    """Validation Recall@3 against training time: one curve per train.py run that had --val-every
    ({label: its val.jsonl records}), and each ranker that does not train as a horizontal line
    ({label: Recall@3}: random, zero-shot, popularity, the best conventional baseline)."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, records in curves.items():
        ax.plot([r["elapsed"] / 60 for r in records], [r["Recall@3"] for r in records], marker="o", label=label)
    for i, (label, value) in enumerate(lines.items()):
        ax.axhline(value, color=["C7", "C8", "C9", "C6"][i % 4], linestyle=["--", ":", "-.", (0, (5, 1))][i % 4],
                   label=f"{label} {value:.2f}")
    users = sorted({r["users"] for records in curves.values() for r in records})
    ax.set_xlabel("training time (minutes; validation scoring left out)")
    ax.set_ylabel(f"val Recall@3 ({', '.join(map(str, users))} users)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")



if __name__ == "__main__":
    pipeline()
