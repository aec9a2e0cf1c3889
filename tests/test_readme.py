# SPDX-License-Identifier: Apache-2.0
# The README's Python examples are executed, so the documented API keeps working.
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_the_two_fresh_machine_commands_first() -> None:
    bash = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    assert "zerobit demo" in bash[0]
    assert "pytest" in bash[1]
    ci = (README.parent / ".ci" / "run").read_text()
    assert bash[1].strip().replace("pytest -q", "pytest -q") in ci


def test_readme_python_examples_run(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples write relative paths such as runs/
    blocks = python_blocks()
    assert blocks
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})
