"""The layout shows the architecture: the commands at the root import the command line
(flags.py), the machinery in utils/ and the tables (networks, losses, recipes); nothing imports
a command, nothing in utils/ imports up or sees the command line, there is no import circle,
and no module grows past 500 lines. Read from the source with ast, so it holds for imports
inside functions too."""
import ast
import os

from conftest import ROOT

COMMANDS = {"train_baseline", "train_gan", "train_simclr", "visualize", "metrics", "bench"}
TABLES = {"models", "losses", "recipes"}
COMMAND_LINE = {"flags"}  # the parser and flags every command shares
MAX_LINES = 500


def project_modules():
    """{dotted module name: path} for every Python file of the project (not the tests)."""
    found = {}
    for name in os.listdir(ROOT):
        if name.endswith(".py"):
            found[name[:-3]] = os.path.join(ROOT, name)
    for folder, dirs, files in [w for top in ("utils", "nets")
                                for w in os.walk(os.path.join(ROOT, top))]:
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        package = os.path.relpath(folder, ROOT).replace(os.sep, ".")
        for name in files:
            if name.endswith(".py"):
                module = package if name == "__init__.py" else f"{package}.{name[:-3]}"
                found[module] = os.path.join(folder, name)
    return found


def imports_of(path, modules):
    """The project modules a file imports, wherever the import statement stands."""
    out = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from utils import quality` imports the module utils.quality
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def graph():
    modules = project_modules()
    edges = {m: imports_of(p, modules) - {m} for m, p in modules.items()}
    # a package's __init__ is imported on the way to its modules: not an edge of its own
    return modules, {m: {d for d in deps if not modules[d].endswith("__init__.py")}
                     for m, deps in edges.items()}


def find_cycle(edges):
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == "open":
                return stack[stack.index(d):] + [d]
            if d not in state:
                cycle = visit(d)
                if cycle:
                    return cycle
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(edges):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def test_the_layout_has_the_commands_and_tables_at_the_root_and_the_rest_in_utils():
    modules, _ = graph()
    assert {m for m in modules if "." not in m and m not in ("utils", "nets")} == (
        COMMANDS | TABLES | COMMAND_LINE)
    assert {"utils.settings", "utils.training", "utils.checkpoints", "utils.sampling"} <= set(
        modules)


def test_no_import_circle():
    _, edges = graph()
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_nothing_imports_up():
    _, edges = graph()
    for module, deps in edges.items():
        assert not deps & COMMANDS, f"{module} imports the command(s) {deps & COMMANDS}"
        if module in TABLES or module.startswith("nets"):  # the tables and networks stand
            # alone (a recipe names its loss and networks; models.py names the networks)
            assert all(d in TABLES or d.startswith("nets") for d in deps), (module, deps)
        if module.startswith("utils"):
            assert all(d.startswith("utils") or d in TABLES for d in deps), (module, deps)
        if module in COMMAND_LINE:
            assert all(d.startswith("utils") or d in TABLES for d in deps), (module, deps)


def command_line_uses(path):
    """Where a file imports argparse or reads an attribute of a name called args."""
    found = []
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names):
            found.append(f"line {node.lineno}: import argparse")
        elif isinstance(node, ast.ImportFrom) and node.module == "argparse":
            found.append(f"line {node.lineno}: from argparse import")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id == "args":
            found.append(f"line {node.lineno}: args.{node.attr}")
    return found


def test_the_library_never_sees_the_command_line():
    """Settings are resolved once by a command (utils/settings.py) and passed down: nothing
    under utils/ imports argparse or reads args.<flag>."""
    uses = {m: u for m, p in project_modules().items()
            if m.startswith("utils") and (u := command_line_uses(p))}
    assert not uses, uses


def test_the_check_finds_a_library_reading_flags(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import argparse\n\ndef f(args):\n    return args.lr\n")
    assert command_line_uses(str(bad)) == ["line 1: import argparse", "line 4: args.lr"]


def test_no_module_is_over_500_lines():
    long = {m: n for m, p in project_modules().items()
            if (n := len(open(p).read().splitlines())) > MAX_LINES}
    assert not long, long


def test_every_command_runs_only_as_a_script():
    modules = project_modules()
    for name in COMMANDS | {"models"}:
        tree = ast.parse(open(modules[name]).read())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body), name
        guard = tree.body[-1]
        assert isinstance(guard, ast.If) and "__main__" in ast.unparse(guard.test), name
