"""The Slicer extension build lists every file the module needs (Slicer installs only what CMake names)."""
import re

from conftest import REPO

MODULE = REPO / "LegSegNet"


def cmake_list(name):
    text = (MODULE / "CMakeLists.txt").read_text()
    block = re.search(rf"set\({name}\n(.*?)\n\s*\)", text, re.S).group(1)
    return {line.strip().replace("${MODULE_NAME}", "LegSegNet") for line in block.splitlines() if line.strip()}


def test_every_core_file_and_resource_is_installed():
    scripts = {"LegSegNet.py"} | {f"LegSegNetLib/{p.name}" for p in (MODULE / "LegSegNetLib").glob("*.py")}
    assert cmake_list("MODULE_PYTHON_SCRIPTS") == scripts
    resources = {p.relative_to(MODULE).as_posix() for p in (MODULE / "Resources").rglob("*") if p.is_file()}
    assert cmake_list("MODULE_PYTHON_RESOURCES") == resources


def test_extension_metadata_names_the_module_and_pytorch():
    top = (REPO / "CMakeLists.txt").read_text()
    assert "add_subdirectory(LegSegNet)" in top and 'set(EXTENSION_DEPENDS "PyTorch")' in top
    assert "WITH_GENERIC_TESTS" in (MODULE / "CMakeLists.txt").read_text()
    assert "depends PyTorch" in (REPO / "LegSegNet.s4ext").read_text()


def test_catalog_entry_matches_the_schema_and_the_s4ext():
    """LegSegNet.json for the ExtensionsIndex (schemas/slicer-extension-catalog-entry-schema-v1.0.1.json: these
    properties only, $schema, category and scm_url required) says what LegSegNet.s4ext says."""
    import json
    entry = json.loads((REPO / "LegSegNet.json").read_text())
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "build_subdirectory", "enabled", "tier"}
    assert {"$schema", "category", "scm_url"} <= set(entry) <= allowed
    assert entry["$schema"].endswith("/slicer-extension-catalog-entry-schema-v1.0.1.json#")
    s4ext = dict(line.split(" ", 1) for line in (REPO / "LegSegNet.s4ext").read_text().splitlines()
                 if line and not line.startswith("#"))
    assert entry["scm_url"] == s4ext["scmurl"] and entry["category"] == s4ext["category"]
    assert entry["build_dependencies"] == s4ext["depends"].split() and entry["scm_revision"] == s4ext["scmrevision"]
