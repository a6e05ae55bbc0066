"""Installs pip into the venv that runs this script, without ensurepip.

`make venv` creates .venv with `python3 -m venv --without-pip`, which needs only the Python
standard library (on Debian/Ubuntu the python3-venv package is not needed), then runs this with
.venv/bin/python. It downloads one pinned pip wheel from PyPI, checks its SHA-256 and installs
it with itself. Nothing happens when the venv already has pip.
"""

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import urllib.request

VERSION = "24.3.1"
URL = (
    "https://files.pythonhosted.org/packages/ef/7d/"
    "500c9ad20238fcfcb4cb9243eede163594d7020ce87bd9610c9e02771876/"
    f"pip-{VERSION}-py3-none-any.whl"
)
SHA256 = "3790624780082365f47549d032f3770eeb2b1e8bd1f7b2e02dace1afa361b4ed"


def main() -> int:
    if importlib.util.find_spec("pip") is not None:
        return 0
    with urllib.request.urlopen(URL, timeout=120) as response:
        wheel = response.read()
    digest = hashlib.sha256(wheel).hexdigest()
    if digest != SHA256:
        print(f"error: {URL} has SHA-256 {digest}, expected {SHA256}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, os.path.basename(URL))
        with open(path, "wb") as f:
            f.write(wheel)
        # A wheel is importable as a zip: pip installs itself from it.
        return subprocess.call(
            [sys.executable, os.path.join(path, "pip"), "install", "--quiet", "--no-index", path]
        )


if __name__ == "__main__":
    sys.exit(main())
