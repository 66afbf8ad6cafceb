"""Sharing results between clones: a DVC remote (local folder and real SSH) and a shared cache.

Each test publishes a private copy of ``built_project`` (clone A) and restores it in a fresh
``git clone`` (clone B), then checks B is a finished project: ``dvc status`` is clean,
``dvc repro`` runs no stage, and every output is byte-identical to A's: the DVC-cached ones
(raw data, features, models), which only the remote or cache can have delivered, and the
git-tracked reports.

The SSH test starts a real OpenSSH server (Debian's ``openssh-server``: ``.ci/run``
installs it) on 127.0.0.1 with throw-away host and client keys, as the current user.
"""
from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import copy_project, run

pytestmark = pytest.mark.slow

# cache: false outputs, committed to git in built_project.
GIT_REPORTS = ["reports/report.html", "reports/results.csv", "reports/metrics.json"]


def cached_outputs(root: Path) -> list[str]:
    """Outputs with cache: true (in git only as hashes in dvc.lock, so a clone gets them from DVC)."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    datasets = params["datasets"]
    return ([f"data/raw/{d}" for d in ("mnist", "speech")] + [f"data/features/{d}" for d in datasets]
            + [f"models/{d}/{v}/seed{k}" for d in datasets for v in params["variants"] for k in params["train"]["seeds"]])


def file_digests(root: Path, rel: str) -> dict[str, str]:
    """{relative file path: sha256} for a file or every file under a folder."""
    base = root / rel
    files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def assert_finished_copy_of(clone: Path, origin: Path) -> None:
    """``clone`` is up to date, has nothing to rerun, and holds exactly ``origin``'s results."""
    proc = run(["dvc", "status"], clone)
    assert "Data and pipelines are up to date" in proc.stdout, proc.stdout
    assert run(["dvc", "status", "--json"], clone).stdout.strip() in ("{}", ""), "dvc status --json not empty"
    again = run(["dvc", "repro"], clone).stdout
    assert "Running stage" not in again, again
    for rel in cached_outputs(origin) + GIT_REPORTS:
        want = file_digests(origin, rel)
        assert want, f"{origin / rel}: nothing there"
        assert file_digests(clone, rel) == want, f"{rel} differs between {origin} and {clone}"
    # Named explicitly: the model and the feature spec, both DVC-cached.
    model = sorted((origin / "models").rglob("model.keras"))[0]
    for path in [model, origin / "data/features/speech/spec.json"]:
        rel = path.relative_to(origin)
        assert (clone / rel).read_bytes() == path.read_bytes(), rel


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = run(cmd, cwd)
    return time.perf_counter() - start, proc.stdout


def round_trip(built_project: Path, tmp_path: Path, url: str, project_options: dict[str, str],
               local_options: dict[str, str], remote_dir: Path, record_property) -> None:
    """Clone A pushes to remote ``shared``; clone B (git clone of A) pulls; B must equal A."""
    a = copy_project(built_project, tmp_path / "A")
    run(["dvc", "remote", "add", "-d", "shared", url], a)
    for key, value in project_options.items():  # settings of the server: committed for the team
        run(["dvc", "remote", "modify", "shared", key, value], a)
    for key, value in local_options.items():    # per-person settings: .dvc/config.local, not in git
        run(["dvc", "remote", "modify", "--local", "shared", key, value], a)
    run(["git", "add", ".dvc/config"], a)
    run(["git", "commit", "-qm", "shared remote"], a)

    push_s, out = timed(["dvc", "push", "--run-cache"], a)
    assert (remote_dir / "files" / "md5").is_dir(), f"nothing pushed to {remote_dir}:\n{out}"
    assert any((remote_dir / "runs").rglob("*")), "dvc push --run-cache pushed no run cache"

    b = tmp_path / "B"
    run(["git", "clone", "-q", str(a), str(b)], tmp_path)
    assert "shared" in run(["dvc", "remote", "list"], b).stdout  # the remote travels with git
    for key, value in local_options.items():
        run(["dvc", "remote", "modify", "--local", "shared", key, value], b)
    for rel in cached_outputs(a):
        assert not (b / rel).exists(), f"{rel} in a fresh clone: it should come from the remote"
    assert (b / "reports/report.html").is_file()  # git-tracked

    pull_s, out = timed(["dvc", "pull", "--run-cache"], b)
    assert any((b / ".dvc/cache/runs").rglob("*")), "dvc pull --run-cache fetched no run cache"
    assert_finished_copy_of(b, a)

    record_property("push_seconds", round(push_s, 2))
    record_property("pull_seconds", round(pull_s, 2))
    print(f"\n{url}: dvc push --run-cache {push_s:.1f} s, dvc pull --run-cache in a fresh clone {pull_s:.1f} s")


def test_local_folder_remote(built_project, tmp_path, record_property):
    remote = tmp_path / "remote"
    round_trip(built_project, tmp_path, str(remote), {}, {}, remote, record_property)


# --- a real SSH server on loopback --------------------------------------------------------

def _sshd_executable() -> str | None:
    found = shutil.which("sshd")
    if found:
        return found
    return "/usr/sbin/sshd" if os.access("/usr/sbin/sshd", os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_banner(port: int, proc: subprocess.Popen, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sshd exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                if conn.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"sshd did not answer on 127.0.0.1:{port} within {timeout} s:\n{log.read_text()}")


@pytest.fixture
def sshd(tmp_path):
    """A real OpenSSH server on 127.0.0.1:<free port> for the current user, keys only."""
    exe = _sshd_executable()
    if exe is None:
        pytest.skip("sshd not installed (Debian: apt-get install openssh-server; .ci/run installs it)")
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        pytest.skip("ssh-keygen not installed (Debian: openssh-client)")
    d = tmp_path / "sshd"
    d.mkdir()
    host_key, client_key = d / "host_ed25519", d / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "dvc-test", "-f", str(key)], check=True)
    authorized = d / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    if os.geteuid() == 0:
        # Run as root, sshd insists on its privilege-separation directory (systemd's
        # RuntimeDirectory=sshd makes it when the service starts; we do not start the service).
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    user = pwd.getpwuid(os.geteuid()).pw_name
    port = _free_port()
    config = d / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        f"PidFile {d / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}",
        f"AllowUsers {user}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "StrictModes no",
        "Subsystem sftp internal-sftp",   # DVC talks SFTP (asyncssh via sshfs)
        "LogLevel VERBOSE",
        "",
    ]))
    log = d / "sshd.log"
    with open(log, "wb") as log_fh:
        proc = subprocess.Popen([exe, "-D", "-e", "-f", str(config)], stdout=log_fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        _wait_for_banner(port, proc, log)
        yield SimpleNamespace(host="127.0.0.1", port=port, user=user, key=client_key, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_ssh_remote(built_project, tmp_path, sshd, record_property):
    remote = tmp_path / "sshremote"
    # dvc-ssh (sshfs -> asyncssh) does not check host keys (known_hosts=None), so no known_hosts set-up.
    url = f"ssh://{sshd.host}{remote}"
    round_trip(built_project, tmp_path, url, {"port": str(sshd.port)},
               {"user": sshd.user, "keyfile": str(sshd.key)}, remote, record_property)
    assert "Accepted publickey" in sshd.log.read_text()  # it really went through sshd


# --- one machine, several users: a shared cache directory ---------------------------------

def test_shared_cache_directory(built_project, tmp_path):
    """Two clones share one cache folder (``cache.shared group``); the second checks out, runs nothing."""
    shared = tmp_path / "shared-cache"
    a = copy_project(built_project, tmp_path / "A")
    run(["dvc", "cache", "dir", str(shared)], a)
    run(["dvc", "config", "cache.shared", "group"], a)
    run(["git", "add", ".dvc/config"], a)
    run(["git", "commit", "-qm", "shared cache"], a)
    # A restrictive umask shows the permissions come from cache.shared, not from the user's umask.
    run(["sh", "-c", "umask 077 && exec dvc commit --force"], a)
    assert "Data and pipelines are up to date" in run(["dvc", "status"], a).stdout

    b = tmp_path / "B"
    run(["git", "clone", "-q", str(a), str(b)], tmp_path)
    assert Path(run(["dvc", "cache", "dir"], b).stdout.strip()) == shared  # the setting travels with git
    for rel in cached_outputs(a):
        assert not (b / rel).exists(), rel
    run(["sh", "-c", "umask 077 && exec dvc checkout"], b)
    assert_finished_copy_of(b, a)
    assert not any(p.is_file() for p in (b / ".dvc" / "cache").rglob("*")), "B used a private cache"

    # What DVC documents for cache.shared=group: files 444 (r--r--r--), folders 775 (rwxrwxr-x);
    # DVC 3 also sets the setgid bit on folders, so new entries keep the folder's group.
    objects = [p for p in (shared / "files" / "md5").rglob("*") if p.is_file()]
    runs = [p for p in (shared / "runs").rglob("*") if p.is_file()]
    folders = [shared] + [p for p in shared.rglob("*") if p.is_dir()]
    assert objects and runs
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in objects} == {oct(0o444)}
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in runs} == {oct(0o664)}  # run cache: group-writable
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in folders} == {oct(0o2775)}
