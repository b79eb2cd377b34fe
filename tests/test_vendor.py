"""The web app's third-party code (SPEC §11): every vendored file is recorded with its
version, licence and sha256, the bytes are what was recorded, and nothing else sits in
vendor/ unrecorded."""

from __future__ import annotations

import hashlib
import json
import re

from pocket_agent.net.web import STATIC_ROOT

VENDOR = STATIC_ROOT / "vendor"
# import ... from "x" / export ... from "x" (across lines), and import("x")
IMPORT = re.compile(
    r"""^\s*(?:import|export)\b[^;'"]*?\bfrom\s+['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]""",
    re.M,
)


def recorded() -> dict[str, dict[str, str]]:
    files: dict[str, dict[str, str]] = json.loads((VENDOR / "VENDOR.json").read_text())["files"]
    return files


def test_every_vendored_file_has_its_recorded_hash_and_provenance() -> None:
    files = recorded()
    assert files, "nothing recorded"
    for name, entry in files.items():
        data = (VENDOR / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
        assert entry["name"] and re.fullmatch(r"\d+\.\d+\.\d+", entry["version"]), name
        assert entry["license"] and entry["source"].startswith("https://registry.npmjs.org/")
        assert (VENDOR / entry["license_file"]).read_text().strip(), name


def test_nothing_unrecorded_is_vendored() -> None:
    files = recorded()
    licences = {entry["license_file"] for entry in files.values()}
    present = {p.name for p in VENDOR.iterdir()}
    assert present == set(files) | licences | {"VENDOR.json"}


def test_the_app_imports_only_the_vendored_libraries_from_vendor() -> None:
    """A module importing a vendored file by another name would escape the hash check."""
    imports = set()
    for module in STATIC_ROOT.rglob("*.mjs"):
        if VENDOR in module.parents:
            continue
        for found in IMPORT.findall(module.read_text()):
            target = found[0] or found[1]
            if "vendor/" in target:
                imports.add(target.rsplit("/", 1)[-1])
            else:
                assert target.startswith("."), f"{module.name} imports {target} from outside"
    assert imports == set(recorded())  # each vendored library is used, nothing else
