"""Builds a model's own virtualenv inside its sandbox, as the model:
`python -I -m fogline.models.runtimes.venv VENV WHEELS SITE_DIRS_JSON REQUIREMENT...`.

The virtualenv sees the platform's packages (the SDK above all) behind its own, through a
.pth file: pip installs only what the model adds or pins differently, from the wheels the
platform downloaded for it (no network in here, nothing built); the model's code runs later.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path


def main(argv: list[str]) -> None:
    if len(argv) < 5:
        sys.exit("usage: venv VENV WHEELS SITE_DIRS_JSON REQUIREMENT...")
    target, wheels, sites, wanted = Path(argv[1]), argv[2], json.loads(argv[3]), argv[4:]
    venv.create(target, with_pip=True, clear=True)
    python = str(target / "bin" / "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    lines = [f"import site; site.addsitedir({d!r})" for d in sites]
    (Path(purelib) / "_fogline_platform.pth").write_text("\n".join(lines) + "\n")
    pip = [python, "-m", "pip", "install", "--quiet", "--no-cache-dir", "--only-binary", ":all:"]
    offline = ["--no-index", "--find-links", wheels, "--disable-pip-version-check", "--"]
    done = subprocess.run([*pip, *offline, *wanted], check=False)
    sys.exit(done.returncode)


if __name__ == "__main__":
    main(sys.argv)
