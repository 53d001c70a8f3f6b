"""cost.py, a cost model of the paper's setting on one node: its arithmetic checked by hand on a toy shape, the FSDP
fix's collectives, the script end to end, and its constants against the scripts' defaults. Pure arithmetic: no model
is loaded, nothing is timed."""
import json
import os
import re
import subprocess
import sys

import pytest

import cost

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 2 layers, hidden 64, feed-forward 128, as many key/value heads as heads, vocabulary 100
TOY = {"layers": 2, "hidden": 64, "ffn": 128, "heads": 4, "kv_heads": 4, "vocab": 100}


def hardware(**changes):
    hw = {"gpus": 8, "tflops": 400.0, "hbm_tbs": 3.35, "hbm_gb": 80.0, "link_gbs": 450.0}
    return {**hw, **changes}


def test_the_toy_shapes_counts_worked_by_hand():
    # a layer: q, o 64x64 each (8,192), k, v 64x64 each (8,192), gate/up/down 64x128 each (24,576), 2 norms (128)
    # = 41,088; the model: 2 layers (82,176) + embedding and head 2 x 100 x 64 (12,800) + final norm (64) = 95,040
    assert cost.llama_params(TOY) == (41_088, 95_040)
    assert cost.kv_bytes_per_token(TOY) == 2 * 2 * 64 * 2  # keys and values, 2 layers, 64 wide, 2 bytes: 512
    assert cost.lora_params(TOY) == 4 * 8 * (64 + 64)  # A and B of rank 8 on q, k, v, o: 4,096
    # a forward reads the layers at 1 byte each (82,176) and the head at 2 (12,800)
    assert cost.weights_read(TOY, 1) == 94_976
    # 10 tokens, no cache: 2 x 95,040 x 10 = 1,900,800; attention 4 x 2 layers x 64 x (1 + 2 + ... + 10 = 55 causal
    # pairs) = 28,160
    assert cost.attention_flop(TOY, 10, 0) == 28_160
    assert cost.forward_flop(TOY, 10) == 1_928_960
    # backward with the base frozen: the weights' part once (no weight gradients), attention twice: 1,900,800 + 56,320
    assert cost.backward_flop(TOY, 10) == 1_957_120
    # 2 rows of 1 token after 74 cached: 2 x (190,080 + 512 x (74 + 1)) = 456,960
    assert cost.forward_flop(TOY, 1, 74, rows=2) == 456_960


def test_a_lockstep_batch_worked_by_hand():
    # 1 batch of 2 rows of 10-token prompts (4 shared), 8-bit, 1 us host waits, at 1 TFLOP/s and 1 GB/s: every pass is
    # bound by its bytes. A decode step: weights 94,976 B + the cache read 3 times, 3 x 2 rows x 74 mean tokens x 512
    # = 227,328 B, so 322,304 B = 0.322304 ms, plus 2 waits x 7 linears x 2 layers x 1 us = 0.028 ms.
    # The prefill: the head and the tails, one weight read each (2 x 0.094976 ms), and their waits (2 x 0.028 ms)
    # = 0.245952 ms. In all 0.245952 + 127 steps x 0.350304 = 44.73456 ms.
    hw = hardware(tflops=1.0, hbm_tbs=0.001)
    g = cost.generation(TOY, batches=1, rows=2, prompt=10, head=4, bytes_per_param=1, host_sync=1e-6, hw=hw)
    assert g["step_ms"]["step"] == pytest.approx(0.350304)
    assert g["step_ms"]["syncs"] == pytest.approx(0.028)
    assert g["seconds"] == pytest.approx(0.04473456)
    assert (g["prefill_tokens"], g["decode_tokens"]) == (4 + 2 * 6, 2 * 128)
    # the paper's summarizer in 8-bit: 20 us x 2 x 7 linears x 60 layers = 16.8 ms of host waits per decode step
    g = cost.generation(cost.LLAMA_30B, 1, 16, 300, 50, 1, cost.BNB_SYNC_S, hardware())
    assert g["step_ms"]["syncs"] == pytest.approx(16.8)


def test_the_real_shapes_give_the_models_parameter_counts():
    assert cost.llama_params(cost.LLAMA2_7B)[1] == 6_738_415_616  # Llama-2-7b-hf's count
    assert cost.llama_params(cost.LLAMA_30B)[1] == pytest.approx(32.5e9, rel=0.005)


def test_fsdp_collectives_worked_by_hand():
    # toy units on 2 GPUs: a layer 2 x 41,088 (bf16) + 4 x 4,096 (fp32 LoRA) = 98,560 B, the root 2 x 12,864 = 25,728 B;
    # each GPU receives half of what is gathered. Today, 4 micro-steps of 3 gathers per layer and 1 of the root:
    # 4 x 7 = 28 gathers, 4 x (6 x 98,560 + 25,728) / 2 = 1,234,176 B; fixed, once each: 3, 222,848 / 2 = 111,424 B
    assert cost.unit_bytes(TOY) == (98_560, 25_728)
    assert cost.fsdp_gathers(TOY, 2, 4, fixed=False) == (28, 1_234_176)
    assert cost.fsdp_gathers(TOY, 2, 4, fixed=True) == (3, 111_424)


@pytest.mark.parametrize("shape", [TOY, cost.LLAMA2_7B])
def test_the_fixed_fsdp_path_gathers_less_and_once_per_step_whatever_the_accumulation(shape):
    fixed = {micro: cost.fsdp_gathers(shape, 8, micro, fixed=True) for micro in (1, 4, 32)}
    assert len(set(fixed.values())) == 1 and fixed[1][0] == shape["layers"] + 1
    for micro in (1, 4, 32):
        today = cost.fsdp_gathers(shape, 8, micro, fixed=False)
        assert today[0] == micro * (3 * shape["layers"] + 1) and fixed[micro][1] < today[1]


def test_an_optimizer_steps_time_when_the_links_are_all_that_count():
    # compute made free: 2 GPUs, 1 GB/s links, so a layer's gather takes 98,560 / 2 B = 49.28 us (both: 98.56 us), the
    # root's 12.864 us, the LoRA gradients' reduce-scatter 2 x 4,096 x 4 / 2 B = 16.384 us. 64 prompts at 1:1 are 32
    # users, 16 micro-steps per GPU. Today each waits 111.424 (prefix) + 98.56 (suffixes) + 98.56 (backward) us, the
    # last one the reduce-scatter too: 16 x 308.544 + 16.384 = 4,953.088 us. Fixed: one gather of everything and one
    # reduce-scatter per step, 111.424 + 16.384 = 127.808 us.
    hw = hardware(gpus=2, tflops=1e9, hbm_tbs=1e9, link_gbs=1.0)
    today = cost.training_step_seconds(TOY, 10, 5, 2, hw, fixed=False)
    fixed = cost.training_step_seconds(TOY, 10, 5, 2, hw, fixed=True)
    assert today == pytest.approx(4953.088e-6, rel=1e-6)
    assert fixed == pytest.approx(127.808e-6, rel=1e-6)
    # one process: no FSDP, so nothing to fix
    assert (cost.training_step_seconds(TOY, 10, 5, 1, hw, fixed=False)
            == cost.training_step_seconds(TOY, 10, 5, 1, hw, fixed=True))


def test_prompt_lengths():
    # 4 words x 1.3 + 1 newline
    assert cost.template_tokens("### User:\nHello world") == pytest.approx(6.2)
    # ceil(h / 5) over h = 10..14 (mean 12) is (2 + 3 + 3 + 3 + 3) / 5 = 2.8
    assert cost.blocks_per_user(12) == pytest.approx(2.8)
    lengths = cost.summarizer_prompts(cost.MEAN_HISTORY, 128)
    for kind, (prompt, head) in lengths.items():
        assert 0 < head < prompt < 2048, kind
    assert lengths["merge"][0] > lengths["block"][0]  # ~3.7 summaries of 128 tokens against ~4.5 items of ~41
    summary, tallrec = cost.recommender_prompt(False, 16.31, 128), cost.recommender_prompt(True, 16.31, 128)
    assert tallrec[0] > summary[0] + 300 and tallrec[1] == summary[1]  # the whole history against a summary


def test_the_section_runs_and_returns_a_total(capsys):
    result = cost.bench_paper(cost.parser.parse_args([]))
    out = capsys.readouterr().out
    assert "ESTIMATE" in out and "| stage | work | today (estimate) | after fixes (estimate) |" in out
    stages = result["stages"]
    assert len(stages) == 10 and result["estimate"] is True
    assert result["total_today_s"] == round(sum(s["today_s"] for s in stages))
    assert result["total_today_s"] > result["total_after_s"] > 0
    for s in stages:
        assert s["after_s"] <= s["today_s"], s["stage"]
    train = next(s for s in stages if s["stage"] == "train hierarchical")
    # 10,000 users // 32 per step = 312 steps per epoch, 8 epochs; 32 users / 8 GPUs = 4 micro-steps
    assert (train["optimizer_steps"], train["micro_steps_per_gpu"]) == (2496, 4)
    assert train["all_gathers_per_step_today"] == 4 * (3 * 32 + 1) and train["all_gathers_per_step_after"] == 33
    assert train["bytes_per_gpu_after"] < train["bytes_per_gpu_today"]
    assert len(result["rows"]) == 11 and all(len(r) == 3 for r in result["rows"])


def test_the_script_runs_from_the_command_line(tmp_path):
    out = tmp_path / "cost.json"
    run = subprocess.run([sys.executable, "cost.py", "--gpus", "4", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    with open(out) as f:
        paper = json.load(f)
    assert paper["hardware"]["gpus"] == 4
    eight = cost.bench_paper(cost.parser.parse_args([]))
    assert paper["total_today_s"] > eight["total_today_s"]  # half the GPUs, more time
    with pytest.raises(SystemExit, match="--gpus 3"):
        cost.paper_stages(hardware(gpus=3))


def argparse_default(script, flag):
    """The default= of `flag` in a script's parser.add_argument call, as source text (the scripts are not imported:
    train.py runs as it is imported)."""
    with open(os.path.join(ROOT, script), encoding="utf-8") as f:
        match = re.search(r'add_argument\("' + re.escape(flag) + r'"[^)]*?default=("[^"]*"|[^,)\s]+)', f.read())
    assert match, f"{script}: no default for {flag}"
    return match.group(1).strip('"')


@pytest.mark.parametrize("script, flag, value", [
    ("summarize.py", "--batch-size", cost.SUM_BATCH), ("summarize.py", "--max-new-tokens", cost.SUM_NEW_TOKENS),
    ("train.py", "--epochs", cost.EPOCHS), ("train.py", "--grad-accum", cost.GRAD_ACCUM),
    ("train.py", "--batch-size", 1), ("train.py", "--lora-r", cost.LORA_R),
    ("llm.py", "--recent", cost.RECENT),  # train.py's and evaluate.py's, from llm.add_prompt_flags
    ("train.py", "--lora-targets", "q_proj,k_proj,v_proj,o_proj")])
def test_the_models_setting_is_the_scripts_defaults(script, flag, value):
    assert argparse_default(script, flag) == str(value)
    assert cost.LORA_MODULES == len(argparse_default("train.py", "--lora-targets").split(","))
