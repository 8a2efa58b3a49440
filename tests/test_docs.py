"""The README is for the student first and short; the docs hold the depth; the flags page is
--help itself; every command written in them names only flags its script has; every picture
of docs/results is shown somewhere and links resolve."""
import glob
import os
import re
import shlex
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "jobs"))
import flags_page  # noqa: E402

README = os.path.join(ROOT, "README.md")
DOCS = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def text(path):
    return open(path, encoding="utf-8").read()


def test_the_readme_is_at_most_15_kb_and_starts_with_the_assignment():
    readme = text(README)
    assert len(readme.encode()) <= 15 * 1024, len(readme.encode())
    headings = re.findall(r"(?m)^## (.+)$", readme)
    assert headings[:3] == ["Two commands", "The assignment",
                            "A five-minute check on the real CIFAR-10, on a CPU"], headings
    for doc in ("lessons", "results", "metrics", "cluster", "beyond", "files", "differences",
                "flags", "speed", "visualize", "data"):
        assert f"(docs/{doc}.md)" in readme, doc


def test_the_flags_page_is_helps_own_words():
    """Fails when a flag changed and `python jobs/flags_page.py` was not run."""
    assert text(os.path.join(ROOT, "docs", "flags.md")) == flags_page.page()


def commands(doc):
    """(script, arguments) of every command a page writes: in code blocks, and inline."""
    body = text(doc).replace("\\\n", " ")
    found = []
    for m in re.finditer(r"(?:python |\.venv/bin/python |`)(\w+\.py)((?:[ \t]+[^\s;&|`#]+)*)",
                         body):
        found.append((m.group(1), m.group(2)))
    return found


def parser_for(script, args):
    import bench
    import metrics
    import train_baseline
    import train_gan
    import train_simclr
    import visualize

    if script == "visualize.py":
        figure = args[0] if args and args[0] in visualize.FIGURES else None
        return visualize.figure_parser(figure) if figure else None
    return {"train_baseline.py": train_baseline, "train_gan.py": train_gan,
            "train_simclr.py": train_simclr, "metrics.py": metrics,
            "bench.py": bench}.get(script).build_parser() if script in (
        "train_baseline.py", "train_gan.py", "train_simclr.py", "metrics.py",
        "bench.py") else None


@pytest.mark.parametrize("doc", [README] + DOCS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_command_written_names_only_real_flags(doc):
    for script, rest in commands(doc):
        try:
            args = shlex.split(rest)
        except ValueError:
            continue
        parser = parser_for(script, args)
        if parser is None:
            continue
        known = parser._option_string_actions
        for token in args:
            if token.startswith("--"):
                flag = "--" + token.split("=")[0][2:].replace("-", "_")
                assert flag in known, f"{os.path.basename(doc)}: {script} has no flag {token}"


def test_every_result_picture_is_shown_and_every_link_resolves():
    pages = [README] + DOCS
    linked = set()
    for page in pages:
        base = os.path.dirname(page)
        for target in re.findall(r"\]\(([^)\s#]+)\)", text(page)):
            if target.startswith("http"):
                continue
            path = os.path.normpath(os.path.join(base, target))
            assert os.path.exists(path), f"{os.path.relpath(page, ROOT)} links {target}"
            linked.add(path)
    pictures = set(glob.glob(os.path.join(ROOT, "docs", "results", "*.png")))
    assert pictures and pictures <= linked, sorted(pictures - linked)
    # every clone carries them: under 2 MB together
    assert sum(os.path.getsize(p) for p in pictures) < 2 * 10**6
