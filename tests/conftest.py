"""Shared fixtures: a loopback static file server, a copy of this project in a temp git repo."""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Pipeline tests reuse the unit tests' builders (test_report.write_tree, test_safe_load.rewrite_config, ...),
# and either folder can run alone: both are importable from any test.
for _folder in ("unit", "pipeline"):
    if str(ROOT / "tests" / _folder) not in sys.path:
        sys.path.insert(0, str(ROOT / "tests" / _folder))
SHARED_DATA = ROOT.parent / "shared" / "data"
FSDD_ARCHIVE = SHARED_DATA / "fsdd" / "free-spoken-digit-dataset-1.0.10.tar.gz"
VENV_BIN = Path(sys.executable).parent


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args):  # keep test output readable
        pass


@pytest.fixture
def serve_dir():
    """``serve_dir(folder) -> base URL``: serve a folder over HTTP on 127.0.0.1 (real server, real sockets)."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_Quiet, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# Test files whose tests share the session's `built_project`: under pytest-xdist they run in one worker, so the
# project is built once (tests/unit/test_conftest_groups.py checks this list against the files' fixtures).
BUILT_PROJECT_FILES = ("test_experiments.py", "test_faults.py", "test_incremental.py", "test_integrity.py",
                       "test_pipeline.py", "test_provenance.py", "test_remote.py")


@functools.cache
def xdist_group(path: Path) -> str | None:
    """The group of a test file's tests under pytest-xdist, or None for tests any worker may take one by one.

    A file in tests/pipeline, or one with a module-scoped fixture, is one group (one worker runs it and builds its
    fixtures once); the files that share ``built_project`` are one group together.
    """
    if path.name in BUILT_PROJECT_FILES:
        return "built_project"
    if "pipeline" in path.parts or 'scope="module"' in path.read_text(encoding="utf-8"):
        return path.name
    return None


def _schedule_rank(path: Path) -> int:
    group = xdist_group(path)
    return 0 if group == "built_project" else 1 if group else 2


def pytest_collection_modifyitems(config, items):
    """Everything in tests/pipeline runs DVC itself (or servers, a browser, several processes): slow.

    Under pytest-xdist the groups of :func:`xdist_group` come first, the longest (``built_project``) first of
    all, and single tests after them, so no worker is left with a long group at the end while the other idles.
    """
    for item in items:
        if "pipeline" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.slow)
    # Under xdist only the workers collect (the scheduler deals out their order), and xdist sets a worker's own
    # `dist` to "no": a worker is known by its workerinput.
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: _schedule_rank(Path(str(item.fspath))))


@pytest.hookimpl(optionalhook=True)   # a hook of pytest-xdist: `make test` runs one worker per core
def pytest_xdist_make_scheduler(config, log):
    """Schedule the groups of :func:`xdist_group` as units in collection order (the order above).

    xdist's own ``--dist loadgroup`` reads groups from marks by renaming node ids, which pytest 9 no longer
    allows; a scheduler that names each test's unit is the hook xdist offers for this.
    """
    if config.option.dist not in ("load", "loadgroup"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(config.rootpath / nodeid.split("::", 1)[0]) or nodeid

    config.option.loadscopereorder = False   # keep the order above, not "most tests first"
    return FileGroupScheduling(config, log)


def onednn_setting(which: str) -> str:
    """``TF_ENABLE_ONEDNN_OPTS`` for a fresh Python: ``same`` as this process's TensorFlow runs, or ``flipped``.

    TensorFlow's default turns oneDNN on only on CPUs with AVX-512, and oneDNN's float32 kernels round
    differently from Eigen's: a fresh process compares bit for bit only under the same setting.
    """
    from attention_cnn.training.runtime import onednn_enabled

    on = onednn_enabled() if which == "same" else not onednn_enabled()
    return "1" if on else "0"


FRESH_SETTINGS_CHECK = ("from tensorflow.python.util import _pywrap_util_port\n"
                        "from tensorflow.python.framework import config as _config\n"
                        "print('onednn', int(_pywrap_util_port.IsMklEnabled()))\n"
                        "print('determinism', int(_config.is_op_determinism_enabled()))\n")


def fresh_python(code: str, args: list, cwd: Path, onednn: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a new Python with this process's TensorFlow runtime settings: oneDNN per
    :func:`onednn_setting`, and op determinism on exactly when it is on here (deterministic kernels sum in
    another order too). Asserts the new process ran with them."""
    from tensorflow.python.framework import config

    setting = onednn_setting(onednn)
    determinism = int(config.is_op_determinism_enabled())
    prelude = "import tensorflow as _tf\n_tf.config.experimental.enable_op_determinism()\n" if determinism else ""
    proc = subprocess.run([sys.executable, "-c", prelude + code + FRESH_SETTINGS_CHECK, *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=dict(os.environ, TF_ENABLE_ONEDNN_OPTS=setting))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"onednn {setting}" in proc.stdout and f"determinism {determinism}" in proc.stdout, proc.stdout[-500:]
    return proc


# Float32 rounding: kernels that sum in another order give results a few units in the last place apart
# (about 2e-8 on probabilities was seen). That happens under the other oneDNN setting, and under the same
# settings too once earlier tests in this process have run TensorFlow work (in the full suite), so both
# compare at this tolerance; a wrong model or a missing layer differs by orders of magnitude more.
FLOAT32_TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


def project_files() -> list[str]:
    """Files a clean clone would have: tracked plus untracked-but-not-ignored (so work in progress is tested too),
    less the committed results (dvc.lock, reports/, the recipe runs kept in results/): a test project starts with
    none, so every output it checks was written by its own `dvc repro` and every recipe starts "not run yet"."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                         check=True, capture_output=True).stdout.decode()
    return sorted(f for f in out.split("\0")
                  if f and (ROOT / f).is_file() and f != "dvc.lock" and not f.startswith(("reports/", "results/")))


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None,
        output: Path | None = None) -> subprocess.CompletedProcess:
    """Run a command with the project's virtualenv first on PATH; show its output when it fails.

    ``output``: write stdout and stderr to this file instead of pipes (``stdout`` then holds the file's
    text). Needed for a command that leaves a daemon behind (``dvc queue start``): the daemon inherits
    the pipes, and reading them to their end would wait for the daemon too.
    """
    full_env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1",
                    DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
                    GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")
    full_env.update(env or {})
    if output is None:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=full_env)
    else:
        with open(output, "w") as fh:
            proc = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, text=True, env=full_env)
        proc.stdout, proc.stderr = Path(output).read_text(errors="replace"), ""
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def make_project(dest: Path, params_update: dict | None = None) -> Path:
    """Copy the project into ``dest`` as a fresh git repo with one commit; apply nested ``params_update``."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    if params_update:
        params = yaml.safe_load((dest / "params.yaml").read_text())
        deep_update(params, params_update)
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "test project"], dest)
    return dest


def deep_update(base: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def config(changes: dict | None = None):
    """This project's params.yaml with ``{dotted key: value}`` changes, validated (every variant's section too,
    as the CLI check does): the typed config a stage gets."""
    from attention_cnn.config import load_config

    return load_config(ROOT / "params.yaml", changes, all_models=True)


# Tiny settings: the real code path, shrunk to seconds on a 2-core CPU.
TINY_PARAMS = {
    "data": {"speech": {"embedded": {"train_voices": 2, "test_voices": 1}}},
    "features": {"speech": {"clip_samples": 4000, "frame_step": 128, "examples_per_shard": 8}},
    "train": {"epochs": 1, "batch_size": {"mnist": 256, "speech": 8}},
    "evaluate": {"latency_repeats": 3, "latency_warmup": 1},
}


@pytest.fixture(scope="session")
def built_project(tmp_path_factory):
    """A tiny project after one full `dvc repro` (built once per test session). Do not modify it: use
    :func:`copy_project` to get a private copy (its DVC cache included) for tests that change things."""
    root = make_project(tmp_path_factory.mktemp("built") / "project", TINY_PARAMS)
    proc = run(["dvc", "repro"], root)
    (root / ".repro-stdout.txt").write_text(proc.stdout)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "built"], root)
    return root


def copy_project(src: Path, dest: Path) -> Path:
    """A private copy of a project, its git history, workspace and DVC cache included."""
    shutil.copytree(src, dest, symlinks=True)
    return dest
