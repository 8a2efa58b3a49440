"""The packages only some commands use (utils/extras.py): a missing one is one line naming
the file to install, before any work."""
import sys

import pytest
from conftest import classifier, folder_of_pngs, one_line, run_cli


@pytest.mark.parametrize("module,main,argv,what", [
    ("torch_fidelity", "metrics", ["--metrics", "cfid"], "torch-fidelity"),
    ("sklearn", "train_baseline", ["--dataset", "digits"], "scikit-learn"),
    ("tensorboard", "train_gan", ["--dataset", "digits", "--tensorboard"], "tensorboard"),
])
def test_a_missing_extra_is_one_line_naming_the_file_to_install(module, main, argv, what,
                                                                  tmp_path, monkeypatch,
                                                                  capsys):
    import importlib

    for name in list(sys.modules):  # as if the package were not installed
        if name == module or name.startswith(module + ".") or (
                module == "tensorboard" and name.startswith("torch.utils.tensorboard")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)
    if module == "sklearn":  # a fresh cache: the session's holds the digits already
        argv = argv + ["--cache_dir", str(tmp_path / "cache")]
    if main == "metrics":
        argv = [folder_of_pngs(tmp_path / "fakes", 12), "--real", str(tmp_path / "fakes"),
                "--classifier", classifier(tmp_path / "c.model", 3, 32)] + argv
    else:
        argv = argv + ["--out_dir", str(tmp_path / "run"), "--epochs", "1"]
    err = one_line(*run_cli(importlib.import_module(main).main, argv, capsys)[::2])
    assert what in err and "pip install -r requirements-extras.txt" in err
