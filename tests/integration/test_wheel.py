"""The built distribution installs one import root, ``suanli``, and embeds beside an app's own modules."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _build_wheel(tmp_path: Path) -> Path:
    # Built from a copy of the tracked files, so the checkout gets no build/ or egg-info.
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode().split("\0")
    source = tmp_path / "source"
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((ROOT / name).read_bytes())
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(source)],
        check=True,
        timeout=300,
    )
    return next(out.glob("suanli-*.whl"))


def test_the_wheel_installs_only_suanli_and_imports_beside_an_apps_config_and_router(tmp_path: Path):
    wheel = _build_wheel(tmp_path)
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"suanli"}

    # A fresh venv holding only the wheel; the dependencies come from this interpreter's
    # site-packages by a plain .pth line (its own .pth files, the editable install's among
    # them, are not processed from there).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        timeout=300,
    )
    deps = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    deps += [p for p in sys.path if p.endswith("site-packages")]
    (site / "zz_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")

    app = tmp_path / "app"
    app.mkdir()
    (app / "config.py").write_text("SETTING = 'the application own config'\n")
    (app / "router.py").write_text("def route():\n    return 'the application own router'\n")
    (app / "main.py").write_text(
        textwrap.dedent(
            """
            import config, router
            import suanli
            from suanli import Router, RequestContext, Completion, CompletionStream, Routing
            from suanli import StatusBoard, create_app, BadRequestError, NoRouteError
            from suanli.config import load_catalog

            assert config.SETTING == "the application own config"
            assert router.route() == "the application own router"
            assert "site-packages" in suanli.__file__, suanli.__file__
            catalog = load_catalog()  # package data travels in the wheel
            assert catalog.regions
            app = Router(catalog)
            print("ok", suanli.__file__)
            """
        )
    )
    result = subprocess.run(
        [python, "main.py"], cwd=app, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok ")
    assert Path(result.stdout.split()[1]).is_relative_to(site)  # the wheel's copy, not the checkout
    cli = subprocess.run(
        [python, "-m", "suanli", "--help"], cwd=app, capture_output=True, text=True, timeout=120
    )
    assert cli.returncode == 0, cli.stderr
    assert "simulate" in cli.stdout
