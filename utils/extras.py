"""The packages only some commands use (requirements-extras.txt): imported where needed, and a
missing one said in one line naming the file to install, before any work."""
import importlib

EXTRAS_FILE = "requirements-extras.txt"


def require(module, purpose):
    """The module, imported; or a UserError saying what needs it and what to install."""
    from utils.errors import UserError

    try:
        return importlib.import_module(module)
    except ImportError:
        package = ("tensorboard" if module.startswith("torch.utils.tensorboard") else
                   {"sklearn": "scikit-learn", "torch_fidelity": "torch-fidelity"}.get(
                       module.split(".")[0], module.split(".")[0]))
        raise UserError(f"{purpose} needs the {package} package, which is not installed: "
                        f"pip install -r {EXTRAS_FILE}") from None
