"""docs/flags.md, written from every command's --help: the flags a user can pass, each with
its default, never out of date (tests/test_docs.py fails when the page and --help differ).

    python jobs/flags_page.py            # rewrite docs/flags.md after changing a flag
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

COMMANDS = ("train_baseline", "train_gan", "train_simclr", "visualize", "metrics", "bench")


def helps():
    """(title, help text) of every command and of each visualize.py figure, at 100 columns."""
    import importlib

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: the page to a fixed width
    out = []
    for name in COMMANDS:
        module = importlib.import_module(name)
        parsers = [(f"{name}.py", module.build_parser())]
        if name == "visualize":
            parsers += [(f"visualize.py {f}", module.figure_parser(f)) for f in module.FIGURES]
        for title, parser in parsers:
            parser.prog = title
            out.append((title, parser.format_help()))
    return out


def page():
    parts = ["# Every flag of every command", "",
             "Written by `python jobs/flags_page.py` from each command's `--help`; "
             "[data.md](data.md) says more of the shared flags, [../README.md](../README.md) "
             "where to start.", ""]
    for title, text in helps():
        parts += [f"## {title}", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(parts)


def main(argv=None):
    from utils.files import atomic_write_text

    path, text = os.path.join(ROOT, "docs", "flags.md"), page()
    atomic_write_text(path, text)
    print(f"{path}: {len(text)} characters")


if __name__ == "__main__":
    main()
