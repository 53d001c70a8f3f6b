"""The README and docs/ cannot drift from the code: every script command they show names only flags that the
script's --help lists, and the set-up's requirements file exists and its pinned packages are the ones installed
and the ones .ci/run installs."""
import functools
import glob
import importlib.metadata
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
SCRIPTS = ["trsr", "generate", "data", "summarize", "train", "evaluate", "baselines", "bench", "cost"]


def shown_commands(page):
    """(line, command) of each command in the page's bash blocks and in its inline code that starts with
    python or torchrun; a trailing backslash continues a line."""
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        text = f.read()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        commands += [c.strip() for c in block.replace("\\\n", " ").split("\n") if c.strip()]
    inline = re.findall(r"`((?:python|torchrun) [^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S).replace("\n", " "))
    return [(c.split("#")[0].strip(), c) for c in commands + inline]


@functools.cache
def script_flags(name):
    """The flags `python <name>.py --help` lists (train.py parses its flags as it starts, as a script does)."""
    run = subprocess.run([sys.executable, f"{name}.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    return set(re.findall(r"--[a-z][a-z0-9-]*", run.stdout))


@pytest.mark.parametrize("page", PAGES)
def test_every_flag_a_page_shows_is_one_its_script_takes(page):
    checked, unknown = 0, []
    for command, line in shown_commands(page):
        words = command.replace("[", " ").replace("]", " ").split()
        script = next((w[:-3] for w in words if w.endswith(".py") and w[:-3] in SCRIPTS), None)
        if script is None or words[0] not in ("python", "torchrun", "$"):
            continue
        after = words[words.index(script + ".py") + 1:]
        checked += 1
        unknown += [(script, w, line) for w in after if w.startswith("--") and w.split("=")[0] not in script_flags(script)]
    assert not unknown, "\n".join(f"{page}: {s}.py has no flag {w}: {line}" for s, w, line in unknown)
    if page == "README.md":
        assert checked >= 1  # the main job's command


def test_the_set_up_installs_what_the_readme_says():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        setup = re.search(r"```bash\n(python3 -m venv.*?)```", f.read(), re.S).group(1)
    for part in setup.split("&&"):
        words = shlex.split(part)
        if words[:2] == ["pip", "install"]:
            if "-r" in words:
                assert os.path.exists(os.path.join(ROOT, words[words.index("-r") + 1]))
            for pinned in (w for w in words if "==" in w):
                package, version = pinned.split("==")
                assert importlib.metadata.version(package) == version, pinned
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = f.read()
    assert "pip install -q -r requirements.txt" in ci and ci.rstrip().endswith("python -m pytest -q")
    for pinned in re.findall(r"\S+==\S+", setup):
        assert pinned in ci, f"README set-up installs {pinned}, .ci/run does not"
