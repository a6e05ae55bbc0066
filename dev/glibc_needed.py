"""Print the newest GLIBC symbol version an ELF binary needs (nothing when it needs none).

Used by scripts/build-lambdas.sh to check a Lambda's bootstrap against provided.al2023's glibc.
Reads the binary's version-requirement section (.gnu.version_r) with pyelftools from the
project's venv, so the check needs no binutils. Exit 1 with a message on a file that is not ELF.
"""

import re
import sys

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection

GLIBC = re.compile(r"^GLIBC_(\d+(?:\.\d+)*)$")


def needed_versions(path):
    """Every GLIBC_x.y version the binary's dynamic symbols require, as tuples."""
    versions = set()
    with open(path, "rb") as f:
        elf = ELFFile(f)
        for section in elf.iter_sections():
            if not isinstance(section, GNUVerNeedSection):
                continue
            for _verneed, auxiliaries in section.iter_versions():
                for aux in auxiliaries:
                    m = GLIBC.match(aux.name)
                    if m:
                        versions.add(tuple(int(p) for p in m.group(1).split(".")))
    return versions


def main(argv):
    if len(argv) != 2:
        print("usage: glibc_needed.py BINARY", file=sys.stderr)
        return 2
    try:
        versions = needed_versions(argv[1])
    except (OSError, ELFError) as e:
        print(f"error: {argv[1]}: not a readable ELF binary: {e}", file=sys.stderr)
        return 1
    if versions:
        print(".".join(str(p) for p in max(versions)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
