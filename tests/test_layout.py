"""The layout shows the architecture: the commands at the root import the machinery in utils/
and the tables (networks, losses, recipes); nothing imports a command, nothing in utils/
imports up, there is no import circle, and no module grows past 500 lines. Read from the
source with ast, so it holds for imports inside functions too."""
import ast
import os

from conftest import ROOT

COMMANDS = {"train_baseline", "train_gan", "train_simclr", "visualize", "metrics", "bench"}
TABLES = {"models", "losses", "recipes"}
MAX_LINES = 500


def project_modules():
    """{dotted module name: path} for every Python file of the project (not the tests)."""
    found = {}
    for name in os.listdir(ROOT):
        if name.endswith(".py"):
            found[name[:-3]] = os.path.join(ROOT, name)
    for folder, dirs, files in os.walk(os.path.join(ROOT, "utils")):
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
    assert {m for m in modules if "." not in m and m != "utils"} == COMMANDS | TABLES
    assert {"utils.cli", "utils.training", "utils.checkpoints", "utils.sampling"} <= set(modules)


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
        if module in TABLES:  # the tables stand alone (a recipe names its loss and networks)
            assert deps <= TABLES, f"{module} imports {deps - TABLES}"
        if module.startswith("utils"):
            assert all(d.startswith("utils") or d in TABLES for d in deps), (module, deps)


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
