"""Every README code block, the demo banner's commands and the examples, as a new user types them.

One demo is started the way the quickstart says (``make demo``; when the venv was not made by
make, the command its recipe runs), another with a master key for the key blocks. Shell blocks
run in bash, in a folder laid out like the clone, after ``source .venv/bin/activate`` and nothing
else from this process's environment but the demo's address: ``127.0.0.1:8080`` in a block is
the test demo's port (8080 may be taken on a shared machine), and ``SUANLI_URL`` points the
commands that default to it there. Blocks marked ``not run`` must say why; ``bounded`` ones (a
demo, traffic for minutes) run for seconds and are stopped. Python blocks run as scripts, YAML
blocks must load as part of a config, JSON trace lines must parse, and ``console`` blocks must
print what they show (``...`` stands for anything).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from suanli.config import catalog_text, load_config
from suanli.router.ledger.sqlite.ledger import open_readonly
from suanli.router.simulate.trace import parse_trace
from tests.integration.readme_blocks import Block, commands, expected_headers, read_blocks

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)
BLOCKS = read_blocks(ROOT / "README.md")
RUNNABLE = [b for b in BLOCKS if b.mode != "not run" and b.lang]
MASTER = "sk-readme-master-key"
BOUND_S = 12.0  # how long a bounded command runs before it is stopped
_PORT_TRIES = 3


@dataclass
class Demo:
    home: Path  # the user's folder: the clone's folders, suanli.yaml, requests.jsonl
    port: int
    keyed_port: int  # a second demo, run with SUANLI_MASTER_KEY
    banner: str
    by_make: bool

    def shell_env(self, *, keyed: bool = False) -> dict[str, str]:
        """A new login shell's environment: no venv active, only the system PATH."""
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        venv_bin = str(VENV / "bin")
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
        env["SUANLI_URL"] = f"http://127.0.0.1:{self.keyed_port if keyed else self.port}"
        env["COLUMNS"] = "200"
        env.pop("SUANLI_MASTER_KEY", None)
        if keyed:
            env["SUANLI_MASTER_KEY"] = MASTER
        return env

    def typed(self, text: str, *, keyed: bool = False) -> str:
        port = self.keyed_port if keyed else self.port
        text = re.sub(r"(127\.0\.0\.1|localhost):8080", rf"\g<1>:{port}", text)
        return re.sub(r"--port 8080\b", f"--port {port}", text)

    def bash(self, script: str, *, keyed: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
        full = f"set -eo pipefail\nsource .venv/bin/activate\n{self.typed(script, keyed=keyed)}\n"
        return subprocess.run(
            ["bash", "-c", full],
            cwd=self.home,
            env=self.shell_env(keyed=keyed),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def bounded(self, command: str) -> tuple[int | None, str]:
        """Run ``command`` for BOUND_S seconds: (exit code, or None if it was still running; output)."""
        full = f"source .venv/bin/activate\nexec {self.typed(command)}\n"
        process = subprocess.Popen(
            ["bash", "-c", full],
            cwd=self.home,
            env=self.shell_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = process.communicate(timeout=BOUND_S)
            return process.returncode, out
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGINT)
            out, _ = process.communicate(timeout=30)
            return None, out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(command: list[str], *, cwd: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """Start a demo and read its banner (up to "Press Ctrl-C")."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 150
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Press Ctrl-C"):
            return process, "".join(lines)
    _stop(process)
    pytest.fail(f"{' '.join(command)} did not come up:\n{''.join(lines)}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _port_lost(exc: BaseException, attempt: int) -> bool:
    """The demo could not bind a port found free a moment before, and a try is left."""
    lost = isinstance(exc, pytest.fail.Exception) and "already in use" in str(exc)
    return lost and attempt + 1 < _PORT_TRIES


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    home = tmp_path_factory.mktemp("clone")
    for name in ("examples", "benchmarks", "config", "Makefile", "README.md"):
        (home / name).symlink_to(ROOT / name)
    (home / ".venv").symlink_to(VENV)
    # `make demo` as typed when the venv is make's and up to date; else the command its recipe runs.
    by_make = (
        VENV.resolve() == (ROOT / ".venv").resolve()
        and subprocess.run(["make", "-q", ".venv/.installed"], cwd=ROOT, capture_output=True).returncode == 0
    )
    for attempt in range(_PORT_TRIES):
        # A port found free may be taken before the demo binds it (by another test, or by one
        # of the demo's own sims): then the demo says so and the pair is drawn again.
        port, keyed_port = _free_port(), _free_port()
        env = Demo(home, port, keyed_port, "", False).shell_env()
        ledger = home / "state" / "demo.db"
        env |= {"PORT": str(port), "SUANLI_LEDGER_URL": f"sqlite:///{ledger}"}
        command = ["make", "demo"] if by_make else [str(VENV / "bin" / "suanli"), "demo", "--port", str(port)]
        keyed_env = env | {
            "SUANLI_MASTER_KEY": MASTER,
            "SUANLI_LEDGER_URL": f"sqlite:///{home / 'state' / 'keyed.db'}",
        }
        try:
            first, banner = _start(command, cwd=ROOT if by_make else home, env=env)
        except pytest.fail.Exception as exc:
            if _port_lost(exc, attempt):
                continue
            raise
        try:
            second, _ = _start(
                [str(VENV / "bin" / "suanli"), "demo", "--port", str(keyed_port)], cwd=home, env=keyed_env
            )
        except BaseException as exc:
            _stop(first)
            if _port_lost(exc, attempt):
                continue
            raise
        break
    # What a user's folder holds for the blocks that name files: their config, a batch input.
    # suanli.yaml keeps its own ledger (made here, empty, as a served config would have it): the
    # in-process SDK block opens it while the demo runs on its own.
    mine = f"sqlite:///{home / 'state' / 'suanli.db'}"
    open_readonly(mine).close()
    config = yaml.safe_load(catalog_text()) | {"ledger": {"url": mine}}
    (home / "suanli.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    line = {
        "custom_id": "r1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "deepseek-flash", "messages": [{"role": "user", "content": "你好"}]},
    }
    (home / "requests.jsonl").write_text(json.dumps(line, ensure_ascii=False) + "\n", encoding="utf-8")
    try:
        yield Demo(home, port, keyed_port, banner, by_make)
    finally:
        _stop(second)
        _stop(first)


def test_every_block_is_known_and_every_block_not_run_says_why():
    assert RUNNABLE, "no README block found"
    for block in BLOCKS:
        assert block.lang in {"", "sh", "bash", "python", "yaml", "json", "console"}, block.name
        if block.mode == "not run":
            assert len(block.why) > 20, f"{block.name}: a block that is not run must say why"


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_readme_block_works_as_typed(block: Block, demo: Demo):
    if block.lang in ("sh", "bash"):
        _shell_block(block, demo)
    elif block.lang == "python":
        script = demo.home / f"block_{block.line}.py"
        script.write_text(demo.typed(block.text), encoding="utf-8")
        result = demo.bash(f"python {script.name}")
        assert result.returncode == 0, f"{block.name}\n{result.stdout}\n{result.stderr}"
    elif block.lang == "yaml":
        base = yaml.safe_load(catalog_text())
        config = load_config(base | yaml.safe_load(block.text), environ={})
        assert config.regions
    elif block.lang == "json":
        lines = block.text.splitlines()
        sample = load_config(ROOT / "examples" / "sample-day" / "config.yaml")
        assert len(parse_trace(lines, sample).jobs) == len(lines) - 1
    elif block.lang == "console":
        _console_block(block, demo)


def _shell_block(block: Block, demo: Demo) -> None:
    if block.mode == "bounded":
        for command in commands(block.text):
            if command.startswith("make test"):
                continue  # this test is part of `make test`
            if command.startswith("make demo"):
                assert demo.banner.startswith("\nsuanli demo") or "suanli demo:" in demo.banner
                continue  # the fixture's demo is this command, run as typed when make made the venv
            code, out = demo.bounded(command)
            assert code in (None, 0), f"{block.name}: {command} exited {code}\n{out}"
            assert "Traceback" not in out, f"{block.name}: {command}\n{out}"
        return
    keyed = "$SUANLI_MASTER_KEY" in block.text
    result = demo.bash(block.text, keyed=keyed)
    assert result.returncode == 0, f"{block.name}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, f"{block.name}\n{result.stderr}"
    for header in expected_headers(block.text):
        assert header.lower() in result.stdout.lower(), f"{block.name}: no {header} in\n{result.stdout}"
    if keyed:
        assert "sk-suanli-" in result.stdout  # the virtual key was made


def _console_block(block: Block, demo: Demo) -> None:
    shown: list[tuple[str, list[str]]] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            shown.append((line[2:], []))
        elif shown:
            shown[-1][1].append(line)
    for command, expected in shown:
        result = demo.bash(command + " || true")
        out = result.stdout + result.stderr
        for line in expected:
            pieces = [p.strip() for p in line.split("...") if p.strip()]
            at = 0
            for piece in pieces:
                found = out.find(piece, at)
                assert found >= 0, f"{block.name}: {command!r} printed no {piece!r}:\n{out}"
                at = found + len(piece)


def test_the_banner_commands_work_as_typed(demo: Demo):
    banner = demo.banner.splitlines()
    start = banner.index("Try it with curl:") + 1
    curl = "\n".join(banner[start : banner.index("", start)])
    result = demo.bash(curl)
    assert result.returncode == 0 and "x-suanli-region" in result.stdout.lower(), (
        result.stdout + result.stderr
    )
    start = banner.index("Or with the openai SDK:") + 1
    snippet = "\n".join(line[2:] for line in banner[start : banner.index("", start)])
    (demo.home / "banner_sdk.py").write_text(snippet, encoding="utf-8")
    result = demo.bash("python banner_sdk.py")
    assert result.returncode == 0, result.stdout + result.stderr
    urls = re.findall(r"suanli (?:traffic|monitor|vouchers) --url \S+", demo.banner)
    assert len(urls) == 3, demo.banner
    for command in urls:
        if command.startswith("suanli traffic"):
            code, out = demo.bounded(command)
            assert code in (None, 0) and "Traceback" not in out, out
        else:
            result = demo.bash(command)
            assert result.returncode == 0, command + "\n" + result.stdout + result.stderr


def test_the_examples_run_against_the_running_demo(demo: Demo):
    result = demo.bash(f"python examples/openai_client.py http://127.0.0.1:{demo.port}/v1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("interactive -> ")
    result = demo.bash("python examples/embedded_router.py")
    assert result.returncode == 0, result.stdout + result.stderr
    env = {"WUHAN_API_KEY": "k", "SHANGHAI_API_KEY": "k", "QINGYANG_API_KEY": "k", "DEEPSEEK_API_KEY": "k"}
    exports = " ".join(f"{k}={v}" for k, v in env.items())
    result = demo.bash(f"export {exports}\nsuanli config check examples/config.example.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
