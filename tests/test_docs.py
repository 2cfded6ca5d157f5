"""Every code block of README.md and docs/*.md runs, as written, on a real Fashion-MNIST subset.

The convention (also in docs/development.md):

* A file's fenced ``python``, ``bash``, ``sh`` and ``console`` blocks run in the order they appear, in one fresh
  working folder per file, which holds links to the repository's ``examples/`` and ``formats/`` (so paths read
  as they do from the repository root) and the files earlier blocks wrote.
* Python blocks of a file share one namespace, started by ``PRELUDE`` below: the names a block may use without
  defining them (``model``, ``train_loader``, ``test_loader``, ``train_set``, ``test_set``).
* A ``python file=NAME`` block is the user's file ``NAME``: written to the working folder, not run.
* A shell block runs in ``bash -e -o pipefail``; a ``console`` block runs its ``$ `` lines. The environment:
  ``.venv/bin`` first on PATH, ``PEMN_FASHION_MNIST_DIR`` the subset the ``fmnist_subset`` fixture writes
  (2000 training / 500 test images), one torch thread, ``COLUMNS=100``.
* A block whose previous line is ``<!-- long: run by ... -->`` is skipped: it shows a real run that takes
  minutes or hours, and the marker names the benchmark or script that runs it.

Other languages (``text``, ``json``) are output, not run. The test also checks the pages' links, that
docs/cli.md is what scripts/cli_docs.py writes now, and that README.md stays a first page.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_script

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
RUN = ("python", "bash", "sh", "console")
LONG = re.compile(r"^<!-- long: (.*run by .+) -->$")

PRELUDE = '''
import torch
from torch.utils.data import DataLoader, TensorDataset

import pemn_compress as pemn
from pemn_compress.data import get_dataset

_data = get_dataset("fashion-mnist")  # the real subset (PEMN_FASHION_MNIST_DIR)


def _images(x, y):  # uint8 (N, 1, 28, 28) -> float images in [0, 1], integer labels
    return TensorDataset(torch.from_numpy(x).float().div(255), torch.from_numpy(y).long())


train_set, test_set = _images(_data.x_train, _data.y_train), _images(_data.x_test, _data.y_test)
train_loader = DataLoader(train_set, batch_size=128, shuffle=True)
test_loader = DataLoader(test_set, batch_size=500)
model = pemn.create_model("test_convmixer", in_chans=1, num_classes=10)
'''


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    info: str  # the rest of the fence's info string (file=NAME)
    text: str
    long: str | None  # the long marker's reason

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def file(self) -> str | None:
        found = re.search(r"\bfile=(\S+)", self.info)
        return found.group(1) if found else None


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page, top-level fences only (```lang info ... ```)."""
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = re.match(r"^```(\w*)\s*(.*)$", lines[i])
        if not opening:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```")
        marker = LONG.match(lines[i - 1].strip()) if i else None
        found.append(Block(page, i + 1, opening.group(1), opening.group(2), "\n".join(lines[i + 1:end]) + "\n",
                           marker.group(1) if marker else None))
        i = end + 1
    return found


def runnable(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.lang in RUN]


def shell_text(block: Block) -> str:
    if block.lang != "console":
        return block.text
    return "\n".join(line[2:] for line in block.text.splitlines() if line.startswith("$ ")) + "\n"


@pytest.fixture
def doc_folder(fmnist_subset, tmp_path, monkeypatch):
    """The working folder of one page's blocks, and the environment they run in."""
    for name in ("examples", "formats"):
        (tmp_path / name).symlink_to(REPO / name, target_is_directory=True)
    bin_dir = str(Path(sys.executable).parent)
    env = {"PEMN_FASHION_MNIST_DIR": str(fmnist_subset), "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
           "OMP_NUM_THREADS": "1", "COLUMNS": "100"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # a user's file= module imports, as `python` in that folder would
    return tmp_path


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_block_of_the_page_runs(page, doc_folder):
    import torch

    namespace: dict = {"__name__": "__doc__"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(PRELUDE, "tests/test_docs.py:PRELUDE", "exec"), namespace)
        for block in runnable(page):
            if block.long:
                continue
            if block.file:
                (doc_folder / block.file).write_text(block.text)
                sys.modules.pop(Path(block.file).stem, None)  # a page's file replaces another page's
            elif block.lang == "python":
                exec(compile(block.text, block.where, "exec"), namespace)
            else:
                result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", shell_text(block)], cwd=doc_folder,
                                        capture_output=True, text=True, timeout=300)
                assert result.returncode == 0, (block.where, result.returncode, result.stdout[-3000:],
                                                result.stderr[-3000:])
    finally:
        torch.set_num_threads(threads)


def test_blocks_are_run_or_marked_long_with_what_runs_them():
    counted = {"run": 0, "file": 0, "long": 0}
    for page in PAGES:
        text = page.read_text()
        for block in runnable(page):
            counted["long" if block.long else "file" if block.file else "run"] += 1
        for line_no, line in enumerate(text.splitlines(), 1):
            if line.startswith("<!-- long"):
                assert LONG.match(line.strip()), f"{page.name}:{line_no}: say what runs it: <!-- long: run by ... -->"
    assert counted["run"] >= 10 and counted["long"] <= counted["run"] // 2, counted


def test_cli_reference_is_what_the_script_writes_now():
    generated = run_script("scripts/cli_docs.py").stdout
    assert (REPO / "docs" / "cli.md").read_text() == generated, (
        "docs/cli.md is stale: run `python scripts/cli_docs.py --out docs/cli.md`")


def test_readme_is_a_first_page():
    text = README.read_text()
    assert len(text.splitlines()) < 200
    assert "pip install ." in text
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in text, f"README.md does not link docs/{page.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve_and_no_machine_paths(page):
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        assert (page.parent / target.split("#")[0]).exists(), f"{page.name}: broken link {target}"
    for bad in ("/work/", "/home/", "/tmp/", "/root/", "C:\\"):
        assert bad not in text, f"{page.name}: machine-specific path {bad}"
