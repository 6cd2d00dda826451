"""Static checks of the Slicer module's files, which cannot run outside Slicer.

The module (AnomalyDetection.py), its Qt Designer file and the extension's CMake listing must stay
in step with each other and with the engine: a widget the code uses but the .ui lacks, a Python file
the CMake listing forgets (it would be missing from the built extension), or a torch import at
module level (Slicer could no longer start the module before PyTorch is installed) would only show
up inside Slicer. These tests read the files as text, XML and Python syntax trees instead.
"""

from __future__ import annotations

import ast
import py_compile
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Set

import pytest
import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "AnomalyDetection"
MODULE_FILE = MODULE_DIR / "AnomalyDetection.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "AnomalyDetection.ui"
CMAKE_FILE = MODULE_DIR / "CMakeLists.txt"
PACKAGES = ("AnomalyDetectionLib", "AnomalyDetectionMRML")
RESOURCE_FOLDERS = ("Models", "Samples", "UI", "Icons")
REQUIREMENTS_FILE = MODULE_DIR / "Resources" / "requirements.txt"
#: Imports that must stay inside functions: they need torch, which Slicer installs on first use.
LAZY_ONLY = {"torch", "monai", "sklearn", "scipy", "nilearn", "AnomalyDetectionMRML"}
#: The engine's torch-free front door: the only engine modules the module file imports at module level.
FRONT_DOOR = {"AnomalyDetectionLib.catalog", "AnomalyDetectionLib.dependencies", "AnomalyDetectionLib.errors"}
#: Third-party packages that Slicer's Python ships (the engine may import them at module level).
SHIPPED_WITH_SLICER = {"numpy", "SimpleITK", "vtk", "vtkmodules", "slicer"}


def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"), filename=str(MODULE_FILE))


def ui_root() -> ET.Element:
    return ET.parse(UI_FILE).getroot()


def ui_widgets() -> Dict[str, ET.Element]:
    return {w.get("name"): w for w in ui_root().iter("widget")}


def cmake_list(variable: str) -> List[str]:
    """Entries of ``set(<variable> ...)`` in the module's CMakeLists.txt, with ${MODULE_NAME} expanded."""
    text = CMAKE_FILE.read_text(encoding="utf-8")
    module_name = re.search(r"set\(MODULE_NAME\s+(\S+)\)", text).group(1)
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{CMAKE_FILE} has no set({variable} ...)"
    entries = [line.split("#", 1)[0].strip() for line in match.group(1).splitlines()]
    return [e.replace("${MODULE_NAME}", module_name) for e in entries if e]


# ------------------------------------------------------------------------------------------ (a) UI


def test_ui_is_well_formed_designer_xml():
    root = ui_root()
    assert root.tag == "ui"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "AnomalyDetection"
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "duplicate widget names in the .ui"


def test_every_ui_widget_the_code_uses_exists():
    source = MODULE_FILE.read_text(encoding="utf-8")
    used = set(re.findall(r"\bui\.(\w+)", source))
    assert used, "the module uses no self.ui widgets?"
    missing = sorted(used - set(ui_widgets()))
    assert not missing, f"used by AnomalyDetection.py but not in {UI_FILE.name}: {missing}"


def test_mrml_widgets_receive_the_scene():
    """Each MRML widget needs the template's mrmlSceneChanged -> setMRMLScene connection."""
    mrml_widgets = {name for name, w in ui_widgets().items()
                    if w.get("class") in ("qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget")}
    connected = {c.findtext("receiver") for c in ui_root().iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert mrml_widgets and mrml_widgets <= connected, f"not connected: {sorted(mrml_widgets - connected)}"


def test_custom_widget_classes_are_declared():
    declared = {c.findtext("class") for c in ui_root().iter("customwidget")}
    used = {w.get("class") for w in ui_root().iter("widget")}
    custom = {c for c in used if c.startswith(("ctk", "qMRML"))}
    assert custom <= declared, f"undeclared custom widgets: {sorted(custom - declared)}"


def parameter_node_fields() -> Dict[str, str]:
    """Field name -> annotation source of the @parameterNodeWrapper class."""
    for node in module_tree().body:
        if isinstance(node, ast.ClassDef) and any(
            getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list
        ):
            return {s.target.id: ast.unparse(s.annotation) for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class in AnomalyDetection.py")


def test_slicer_parameter_names_are_parameter_node_fields():
    fields = parameter_node_fields()
    bound = {}
    for name, widget in ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[name] = prop.findtext("string")
    assert bound, "no widget is connected to the parameter node"
    unknown = {w: p for w, p in bound.items() if p not in fields}
    assert not unknown, f"SlicerParameterName not in the parameter node: {unknown}"
    # ctkSliderWidget and QComboBox connections need a bounded range / a Choice (parameterNodeWrapper rules).
    for widget_name, parameter in bound.items():
        cls = ui_widgets()[widget_name].get("class")
        if cls == "QComboBox":
            assert "Choice" in fields[parameter], f"{parameter}: a combo box needs Annotated[..., Choice(...)]"
        if cls == "ctkSliderWidget":
            assert "WithinRange" in fields[parameter], f"{parameter}: a slider needs WithinRange"


# ------------------------------------------------------------------------------- (b) CMake listing


def test_every_package_file_is_listed_and_every_listed_file_exists():
    scripts = cmake_list("MODULE_PYTHON_SCRIPTS")
    resources = cmake_list("MODULE_PYTHON_RESOURCES")
    expected_scripts = {"AnomalyDetection.py"} | {
        p.relative_to(MODULE_DIR).as_posix() for package in PACKAGES for p in (MODULE_DIR / package).rglob("*.py")
    }
    expected_resources = {
        p.relative_to(MODULE_DIR).as_posix()
        for folder in RESOURCE_FOLDERS for p in (MODULE_DIR / "Resources" / folder).rglob("*") if p.is_file()
    } | {REQUIREMENTS_FILE.relative_to(MODULE_DIR).as_posix()}
    assert not expected_scripts - set(scripts), (
        f"not in MODULE_PYTHON_SCRIPTS: {sorted(expected_scripts - set(scripts))}")
    assert not expected_resources - set(resources), (
        f"not in MODULE_PYTHON_RESOURCES: {sorted(expected_resources - set(resources))}")
    missing = [entry for entry in scripts + resources if not (MODULE_DIR / entry).is_file()]
    assert not missing, f"listed in {CMAKE_FILE.name} but missing: {missing}"
    assert len(scripts) == len(set(scripts)) and len(resources) == len(set(resources)), "duplicate entries"


def test_extension_cmake_has_the_template_parts():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    for needle in ("project(AnomalyDetection)", "EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS",
                   "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS",
                   "find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(AnomalyDetection)",
                   "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert needle in text, needle
    for url in re.findall(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/[^/]+/(\S+?)\"", text):
        assert (ROOT / url).is_file(), f"extension icon/screenshot {url} is not in the repository"
    module_text = CMAKE_FILE.read_text(encoding="utf-8")
    assert "slicerMacroBuildScriptedModule" in module_text
    self_test = r"if\(BUILD_TESTING\).*slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)"
    assert re.search(self_test, module_text, re.S), "the module's self-test is not registered"


# ------------------------------------------------------------------------ (c) compiles, lazy imports


def test_module_compiles(tmp_path):
    py_compile.compile(str(MODULE_FILE), cfile=str(tmp_path / "AnomalyDetection.pyc"), doraise=True)


def import_time_imports(tree: ast.Module) -> Set[str]:
    """Top-level names of modules imported when the file is imported (function bodies excluded)."""
    found: Set[str] = set()
    pending: List[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        pending.extend(ast.iter_child_nodes(node))
    return found


def test_module_imports_no_torch_or_engine_at_import_time():
    eager = import_time_imports(module_tree()) & LAZY_ONLY
    assert not eager, f"AnomalyDetection.py imports {sorted(eager)} at module level; import them inside functions"
    engine = {node.module for node in module_tree().body
              if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("AnomalyDetectionLib")}
    assert engine and engine <= FRONT_DOOR, f"module-level engine imports beyond the front door: {engine - FRONT_DOOR}"


def test_front_door_and_mrml_layer_import_without_torch():
    """What the module imports before the first-use install, and the MRML layer, load no torch (a subprocess:
    this test session has torch loaded already)."""
    import subprocess

    code = ("import sys; import AnomalyDetectionLib.catalog, AnomalyDetectionLib.dependencies, "
            "AnomalyDetectionLib.errors, AnomalyDetectionMRML, AnomalyDetectionLib.cli; "
            "print(sorted(m for m in ('torch', 'monai', 'sklearn', 'scipy', 'nilearn') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_lazy_import_check_sees_module_level_imports():
    tree = ast.parse("import torch\nclass A:\n    from monai import x\ndef f():\n    import AnomalyDetectionLib\n")
    assert import_time_imports(tree) == {"torch", "monai"}


# ---------------------------------------------------------------- (d) constants agree with the engine


def pyproject_dependencies() -> Dict[str, str]:
    """pyproject.toml's dependencies, package name (lower case) -> requirement string."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {Requirement(r).name.lower(): r for r in project["dependencies"]}


def first_use_requirements() -> List[str]:
    from AnomalyDetectionLib.dependencies import read_requirements

    return read_requirements(REQUIREMENTS_FILE)


def test_first_use_requirements_are_the_engine_dependency_ranges():
    """Slicer installs by pyproject's ranges (its Python may be 3.9), torch first, from the one file it ships."""
    requirements = first_use_requirements()
    assert Requirement(requirements[0]).name == "torch", "torch first: monai would pull a default build"
    dependencies = pyproject_dependencies()
    for requirement in requirements:
        package = Requirement(requirement).name.lower()
        assert dependencies.get(package) == requirement, f"{requirement} differs from pyproject.toml"
    assert "REQUIREMENTS_FILE" in MODULE_FILE.read_text(encoding="utf-8")


def test_pinned_versions_lie_within_the_dependency_ranges():
    """requirements.txt (the tested set) is one of the sets the ranges allow."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.lower()] = version
    for package, requirement in pyproject_dependencies().items():
        assert package in pins, f"{package} is a dependency but requirements.txt does not pin it"
        allowed = Requirement(requirement).specifier
        assert allowed.contains(pins[package]), f"{package}=={pins[package]} is outside {requirement}"


def engine_import_time_third_party() -> Set[str]:
    names: Set[str] = set()
    for package in PACKAGES:
        for path in (MODULE_DIR / package).rglob("*.py"):
            names |= import_time_imports(ast.parse(path.read_text(encoding="utf-8")))
    stdlib = set(getattr(sys, "stdlib_module_names", ())) | {"__future__"}
    return {n for n in names if n not in stdlib and n not in PACKAGES}


@pytest.mark.skipif(not hasattr(sys, "stdlib_module_names"), reason="needs Python 3.10+ to tell stdlib modules")
def test_engine_imports_are_shipped_by_slicer_or_installed_on_first_use():
    from AnomalyDetectionLib.dependencies import IMPORT_NAMES

    installed = {IMPORT_NAMES.get(Requirement(r).name, Requirement(r).name) for r in first_use_requirements()}
    uncovered = engine_import_time_third_party() - SHIPPED_WITH_SLICER - installed
    assert not uncovered, f"the engine imports {sorted(uncovered)}, which neither Slicer nor requirements.txt provides"


def test_sample_data_files_exist():
    for name in ("brain_t1_tumour.nrrd", "brain_t1_tumour_truth.nrrd"):
        assert (MODULE_DIR / "Resources" / "Samples" / name).is_file()
    assert (MODULE_DIR / "Resources" / "Icons" / "brain_t1_tumour.png").is_file()
    assert (MODULE_DIR / "Resources" / "Icons" / "AnomalyDetection.png").is_file()
