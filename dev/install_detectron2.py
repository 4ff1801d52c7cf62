#!/usr/bin/env python
"""Install Detectron2's Python code into the running virtualenv, without its C++/CUDA extension.

Why: Detectron2 is not published on PyPI by its authors; it is normally installed from its git
repository and compiled (`pip install 'git+https://github.com/facebookresearch/detectron2.git'`).
Machines that only reach PyPI (like this project's CPU machines) cannot do that. The PyPI sdist
`pb1-detectron2==0.6` holds Detectron2 v0.6's Python sources and model-zoo configs (but no C++/CUDA
sources), which is enough to build, train and evaluate the standard models on the CPU together
with `transfer.d2compat.apply()` (which supplies an empty `detectron2._C` and a few aliases that
newer numpy/Pillow removed).

What it does, all inside the virtualenv of the interpreter that runs it (`sys.prefix`):
  1. exits at once if `import detectron2` already works (a proper install is never touched);
  2. installs Detectron2's Python dependencies with pip;
  3. downloads the sdist into `<venv>/detectron2-src/` with
     `pip download --no-deps --no-binary :all: --no-build-isolation pb1-detectron2==0.6`;
     pip >= 26.3 refuses that sdist (its metadata names a direct-URL dependency in an extra), so on
     that refusal the download is retried with an older pip unpacked into `<venv>/detectron2-src/`;
  4. extracts it and copies its `detectron2/` package into the venv's site-packages, with a small
     `detectron2-0.6.dist-info` so that `pip show/uninstall detectron2` work;
  5. checks in a fresh interpreter that `import detectron2` works.

Usage: `.venv/bin/python dev/install_detectron2.py` (the Makefile runs it when needed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path
from typing import NoReturn

SDIST = "pb1-detectron2==0.6"
SDIST_FILE = "pb1-detectron2-0.6.tar.gz"
VERSION = "0.6"
# Detectron2 v0.6's run-time dependencies (pkg_resources, used by detectron2.model_zoo, is gone
# from setuptools >= 80).
DEPS = [
    "fvcore",
    "iopath<0.1.10",
    "pycocotools",
    "yacs",
    "tabulate",
    "termcolor",
    "cloudpickle",
    "matplotlib",
    "tensorboard",
    "omegaconf",
    "hydra-core",
    "setuptools<80",
]
# Last pip release that still downloads an sdist whose metadata declares a direct-URL dependency.
FALLBACK_PIP = "pip==26.2.1"
DIRECT_URL_REFUSAL = "cannot declare direct URL dependencies"
# pip warns once per package about this machine's unused local index folders: noise.
PIP_NOISE = "is ignored: it is neither a file nor a directory"
INSTALLER_TAG = "msr-tools-install_detectron2"
GIT_HINT = (
    "On a machine that can reach GitHub (e.g. a GPU machine), install Detectron2 with its "
    "compiled ops instead:\n"
    "    pip install 'git+https://github.com/facebookresearch/detectron2.git'"
)


def log(msg: str) -> None:
    print(f"[install_detectron2] {msg}", flush=True)


def fail(msg: str) -> NoReturn:
    print(f"[install_detectron2] ERROR: {msg}\n{GIT_HINT}", file=sys.stderr, flush=True)
    sys.exit(1)


def run_pip(args: list[str], env: dict | None = None) -> tuple[int, str]:
    """Run `python -m pip ARGS`, echo its output (minus the index-folder noise), return (rc, output)."""
    cmd = [sys.executable, "-m", "pip", *args]
    log("$ pip " + " ".join(args))
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if PIP_NOISE not in line:
            print("    " + line, end="", flush=True)
    return proc.wait(), "".join(lines)


def detectron2_importable() -> bool:
    """True when a fresh interpreter of this venv can `import detectron2`."""
    return (
        subprocess.run(
            [sys.executable, "-c", "import detectron2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ).returncode
        == 0
    )


def download_sdist(work: Path) -> Path:
    """Download the sdist into WORK and return its path; fall back to an older pip if needed."""
    dl_dir = work / "download"
    dl_dir.mkdir(parents=True, exist_ok=True)
    target = dl_dir / SDIST_FILE
    if target.is_file():
        log(f"using the sdist already downloaded: {target}")
        return target
    dl_args = [
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--no-build-isolation",
        SDIST,
        "-d",
        str(dl_dir),
    ]
    rc, out = run_pip(dl_args)
    if rc != 0 and DIRECT_URL_REFUSAL in out:
        log(
            f"this pip refuses the sdist's metadata; retrying the download with {FALLBACK_PIP} "
            f"(unpacked into {work / 'pip'}, the venv's own pip is left as it is)"
        )
        pip_dir = work / "pip"
        if not (pip_dir / "pip").is_dir():
            rc, _ = run_pip(["install", "-q", "--no-deps", "--target", str(pip_dir), FALLBACK_PIP])
            if rc != 0:
                fail(f"could not fetch {FALLBACK_PIP} from the package index.")
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(
                [str(pip_dir)]
                + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
            ),
        )
        rc, out = run_pip(dl_args, env=env)
    if rc != 0 or not target.is_file():
        fail(
            f"downloading the sdist {SDIST} from PyPI failed (pip exit code {rc}; output above). "
            "Check the network / package index access."
        )
    return target


def extract(sdist: Path, work: Path) -> Path:
    """Extract SDIST under WORK/src and return the folder holding the `detectron2/` package."""
    src_root = work / "src"
    if src_root.exists():
        shutil.rmtree(src_root)
    src_root.mkdir(parents=True)
    log(f"extracting {sdist.name} into {src_root}")
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(src_root, filter="data")
        else:  # Python without extraction filters: refuse paths that leave src_root
            root = src_root.resolve()
            for member in tar.getmembers():
                dest = (src_root / member.name).resolve()
                if root not in dest.parents and dest != root:
                    fail(f"unsafe path in the sdist: {member.name}")
            tar.extractall(src_root)
    pkgs = list(src_root.glob("*/detectron2/__init__.py"))
    if len(pkgs) != 1:
        fail(f"the sdist {sdist.name} does not hold one detectron2/ package (found {len(pkgs)}).")
    return pkgs[0].parent.parent


def copy_package(src: Path) -> Path:
    """Copy SRC/detectron2 into site-packages and write a minimal dist-info; return the target."""
    site = Path(sysconfig.get_paths()["purelib"])
    dest = site / "detectron2"
    info = site / f"detectron2-{VERSION}.dist-info"
    if dest.exists():
        installer = info / "INSTALLER"
        if installer.is_file() and installer.read_text().strip() == INSTALLER_TAG:
            log(f"replacing the earlier copy at {dest}")
            shutil.rmtree(dest)
        else:
            fail(
                f"{dest} exists but `import detectron2` fails and it was not put there by this "
                "script: fix or remove that installation first."
            )
    log(
        f"copying {src / 'detectron2'} -> {dest} (Python code and model-zoo configs only; "
        "no C++/CUDA extension is built)"
    )
    shutil.copytree(src / "detectron2", dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

    if info.exists():
        shutil.rmtree(info)
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: detectron2\nVersion: {VERSION}\n"
        f"Summary: Detectron2 {VERSION} Python sources from the PyPI sdist {SDIST}, "
        "without the compiled detectron2._C extension (see transfer/d2compat.py)\n"
    )
    (info / "INSTALLER").write_text(INSTALLER_TAG + "\n")
    files = [p.relative_to(site).as_posix() for p in sorted(dest.rglob("*")) if p.is_file()]
    files += [f"{info.name}/{name}" for name in ("METADATA", "INSTALLER", "RECORD")]
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--force", action="store_true", help="reinstall even when `import detectron2` already works"
    )
    args = parser.parse_args(argv)

    if sys.prefix == sys.base_prefix:
        fail(
            f"{sys.executable} is not a virtualenv's interpreter; run this with the project's "
            ".venv/bin/python so that nothing is installed outside the virtualenv."
        )
    if detectron2_importable() and not args.force:
        log("`import detectron2` already works in this environment: nothing to do.")
        return 0
    try:
        import torch  # noqa: F401  (the sdist's metadata step imports torch)
    except ImportError:
        fail(
            "torch is not installed in this environment; install the project first "
            "(`pip install -e .`)."
        )

    work = Path(sys.prefix) / "detectron2-src"
    log(f"installing Detectron2 {VERSION} (Python code only) into {sys.prefix}")
    log("step 1/4: Detectron2's Python dependencies")
    rc, _ = run_pip(["install", "-q", *DEPS])
    if rc != 0:
        fail("installing Detectron2's Python dependencies failed (pip output above).")
    if detectron2_importable() and not args.force:
        log("`import detectron2` works now that its dependencies are installed: done.")
        return 0

    log(f"step 2/4: downloading the sdist {SDIST} into {work / 'download'}")
    sdist = download_sdist(work)
    log("step 3/4: extracting it and copying the detectron2/ package")
    dest = copy_package(extract(sdist, work))
    log("step 4/4: checking `import detectron2`")
    if not detectron2_importable():
        fail(f"`import detectron2` still fails after copying it to {dest}.")
    log(
        f"done: detectron2 {VERSION} at {dest}. It has no compiled ops: call "
        "transfer.d2compat.apply() before using it."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
