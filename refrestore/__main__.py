import os
import sys

_pkg = sys.modules.get("refrestore")
if _pkg is not None and getattr(_pkg, "__file__", None) is None:
    # `python -m refrestore` from the folder that holds the clone (named refrestore): the clone's
    # root, a folder without __init__.py, came first on sys.path as a namespace package, and the
    # installed package's modules were found under it by the editable install's finder. Forget
    # that namespace and import this file's own package.
    for _name in [m for m in sys.modules if m == "refrestore" or m.startswith("refrestore.")]:
        del sys.modules[_name]
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from refrestore.cli import main  # noqa: E402

main()
