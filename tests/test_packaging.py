"""Packaging: every package of harness/ is listed in pyproject.toml, and a non-editable install
carries the built-in suites (a wheel built here, unpacked, used from another directory)."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def listed_packages():
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"packages = \[(.*?)\]", text, re.S).group(1)
    return set(re.findall(r'"([\w.]+)"', block))


def test_every_package_is_listed():
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "harness").rglob("__init__.py")
             if "__pycache__" not in p.parts}
    assert listed_packages() == found | {"harness.builtin_suites"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and "No matching distribution" in r.stderr + r.stdout:
        pytest.skip("no package index to fetch the build backend from")
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = out.glob("layerbench-*.whl")
    return whl


def test_wheel_carries_the_suites_and_runs_them_from_elsewhere(wheel, tmp_path):
    names = zipfile.ZipFile(wheel).namelist()
    toml = {Path(n).name for n in names if n.startswith("harness/builtin_suites/") and n.endswith(".toml")}
    assert toml == {p.name for p in (ROOT / "suites").glob("*.toml")} and "quick.toml" in toml
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    code = ("import harness.suite as s; print(s.builtin_dir()); print(','.join(s.builtin_suites())); "
            "print(s.load_suite('quick').count())")
    r = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True, check=True,
                       env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    where, names_line, count = r.stdout.split()
    assert where.startswith(str(site)) and "quick" in names_line.split(",") and count == "22"
