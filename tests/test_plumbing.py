"""The shared plumbing that matters on a GPU node: the process group's timeout and device, models loaded
straight to their device, and shared files that another rank never reads half-written."""
import datetime
import json
import os

import pytest
import torch

import evaluate
import llm
from tests.tiny import tiny_model_dir


@pytest.fixture
def torchrun_env(monkeypatch):
    for key, value in {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    calls = []
    monkeypatch.setattr(llm.dist, "init_process_group", lambda backend, **kwargs: calls.append((backend, kwargs)))
    return calls


def test_the_process_group_waits_hours_for_the_slowest_rank_on_cpus(torchrun_env):
    assert llm.init_distributed() == (1, 1, 2, torch.device("cpu"))
    (backend, kwargs), = torchrun_env
    assert backend == "gloo" and kwargs == {"timeout": datetime.timedelta(hours=12)}


def test_on_gpus_the_process_group_is_bound_to_the_local_gpu(torchrun_env, monkeypatch):
    monkeypatch.setattr(llm.torch.cuda, "is_available", lambda: True)
    chosen = []
    monkeypatch.setattr(llm.torch.cuda, "set_device", chosen.append)
    rank, local_rank, world_size, device = llm.init_distributed()
    assert device == torch.device("cuda", 1) and chosen == [device]
    (backend, kwargs), = torchrun_env
    assert backend == "nccl" and kwargs == {"timeout": datetime.timedelta(hours=12), "device_id": device}


def test_models_are_loaded_straight_to_their_device(tmp_path, monkeypatch):
    real, seen = llm.AutoModelForCausalLM.from_pretrained, []

    def spy(path, **kwargs):
        seen.append(kwargs)
        return real(path, **kwargs)

    monkeypatch.setattr(llm.AutoModelForCausalLM, "from_pretrained", spy)
    monkeypatch.setattr(torch.nn.Module, "to", lambda *a, **k: pytest.fail("the model was moved after loading"))
    model = llm.load_model(tiny_model_dir(tmp_path), dtype="float32", device="cpu")
    assert seen == [{"dtype": torch.float32, "device_map": {"": torch.device("cpu")}}]
    assert {p.device for p in model.parameters()} == {torch.device("cpu")}


def test_scoring_json_is_written_aside_then_renamed(tmp_path, monkeypatch):
    run = {"model": "m", "adapter": None}
    evaluate.claim_folder(str(tmp_path), run)
    assert json.load(open(tmp_path / "scoring.json")) == run and os.listdir(tmp_path) == ["scoring.json"]

    def dies_halfway(obj, f, **kwargs):  # a rank 0 that stops in the middle of writing
        f.write('{"model": ')
        raise KeyboardInterrupt

    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setattr(evaluate.json, "dump", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        evaluate.claim_folder(str(other), run)
    assert not (other / "scoring.json").exists()  # what the other ranks read is whole or absent


def test_an_8bit_model_on_a_gpu_computes_in_fp16_as_its_int8_matmul_does(monkeypatch):
    seen = []
    monkeypatch.setattr(llm.AutoModelForCausalLM, "from_pretrained", lambda path, **kwargs: seen.append(kwargs))
    monkeypatch.setattr(llm, "resolve_model", lambda name: name)
    llm.load_model("some/model", quantize="8bit", device="cuda:0")
    llm.load_model("some/model", quantize="4bit", device="cuda:0", dtype="bfloat16")
    assert seen[0]["dtype"] == torch.float16 and seen[0]["quantization_config"].load_in_8bit
    assert seen[0]["device_map"] == {"": torch.device("cuda", 0)}
    assert seen[1]["dtype"] == torch.bfloat16 and seen[1]["quantization_config"].load_in_4bit
