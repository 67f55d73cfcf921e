"""The ssh target against a real OpenSSH server on 127.0.0.1 (no mock of ssh, scp or sshd).

The module fixture starts ``sshd -D -e -f CONFIG`` of its own on a free port with a generated host key and
user key (ssh-keygen), keys and config in a temp dir, and gives the client a temp ssh_config whose
known_hosts holds exactly that host key, so host-key checking stays on. The "device" is this machine; its
Python is the venv's (numpy + onnxruntime). Failure cases use real broken setups: a closed port, an
unauthorised key, a wrong or missing host key, a Python without onnxruntime, a probe killed by a signal.
Nothing is installed here: without sshd the tests fail and say to install openssh-server (tools/setup.sh
does on CI).
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest

from edgekd.errors import EdgekdError, InputError
from edgekd.profile import ProbeSettings, profile_model, to_profile
from edgekd.profile.resolve import load_targets_file, resolve_target, validate_spec
from edgekd.profile.ssh import TRANSFER, SSHTarget, parse_ssh_url
from edgekd.recipe.schema import ProfileConfig

REPO = Path(__file__).resolve().parents[1]
TEACHER = REPO / "recipes" / "teachers" / "fmnist_resnet20.pt"
FAST = ProbeSettings(threads=1, warmup=1, runs=10, timeout_s=120)


def _sshd_binary() -> str:
    found = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd",) if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.fail(
            "sshd not found: install openssh-server (apt-get install openssh-server; tools/setup.sh does)"
        )
    return found


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running loopback sshd and the client-side files that reach it."""

    root: Path
    port: int
    user: str
    user_key: Path
    other_key: Path
    host_key: Path
    ssh_config: Path

    def spec_fields(self, **extra: object) -> dict:
        fields = {
            "host": "127.0.0.1",
            "user": self.user,
            "port": self.port,
            "python": sys.executable,
            "identity_file": str(self.user_key),
            "ssh_config": str(self.ssh_config),
        }
        fields.update(extra)
        return fields

    def url(self, **query: str) -> str:
        """This server as an ``ssh://`` URL, the client's files (and ``query``) as its query fields."""
        fields = {
            "python": sys.executable,
            "identity_file": str(self.user_key),
            "ssh_config": str(self.ssh_config),
            **query,
        }
        return f"ssh://{self.user}@127.0.0.1:{self.port}?{urlencode(fields)}"

    def client_config(self, known_hosts: str) -> Path:
        """Another ssh_config whose known_hosts file holds ``known_hosts`` (for host-key failures)."""
        path = self.root / f"known_hosts.{abs(hash(known_hosts))}"
        path.write_text(known_hosts)
        config = self.root / f"ssh_config.{abs(hash(known_hosts))}"
        config.write_text(f"Host *\n  UserKnownHostsFile {path}\n  GlobalKnownHostsFile /dev/null\n")
        return config


def device_tmp(root: Path) -> Path:
    """The device's temp dir: sessions of this sshd get it as TMPDIR (``SetEnv``), so the remote temp dirs a
    test sees are its own server's, not those of another test process or user on this machine."""
    path = root / "device-tmp"
    path.mkdir(exist_ok=True)
    return path


def _start_sshd(
    binary: str, root: Path, host_key: Path, name: str, sftp: bool
) -> tuple[subprocess.Popen, int]:
    """``sshd -D`` from ``root/name.config`` on a free loopback port; ``sftp=False`` leaves out the subsystem
    (as minimal images and Dropbear do), so only plain ssh sessions work there."""
    for _attempt in range(3):  # the free port can be taken between probing and binding
        port = _free_port()
        config = root / f"{name}.config"
        config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nStrictModes no\nUsePAM no\n"
            f"PidFile {root / name}.pid\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
            f"SetEnv TMPDIR={device_tmp(root)}\n" + ("Subsystem sftp internal-sftp\n" if sftp else "")
        )
        log = root / f"{name}.log"
        with open(log, "wb") as sink:
            proc = subprocess.Popen([binary, "-D", "-e", "-f", str(config)], stdout=sink, stderr=sink)
        deadline = time.monotonic() + 15
        while (
            time.monotonic() < deadline and proc.poll() is None and "Server listening" not in log.read_text()
        ):
            time.sleep(0.05)
        if proc.poll() is None and "Server listening" in log.read_text():
            return proc, port
        proc.kill()
        proc.wait()
    pytest.fail(f"sshd did not start: {log.read_text()[-500:]}")


def _stop_sshd(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _known_hosts_line(port: int, host_key: Path) -> str:
    return f"[127.0.0.1]:{port} {' '.join(host_key.with_suffix('.pub').read_text().split()[:2])}\n"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> Server:
    binary = _sshd_binary()
    root = tmp_path_factory.mktemp("sshd")
    host_key, user_key, other_key = (_keygen(root / n) for n in ("host_key", "user_key", "other_key"))
    (root / "authorized_keys").write_text(user_key.with_suffix(".pub").read_text())
    if os.geteuid() == 0:  # a root sshd refuses to start without its privilege-separation directory
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    proc, port = _start_sshd(binary, root, host_key, "sshd", sftp=True)
    server = Server(root, port, getpass.getuser(), user_key, other_key, host_key, Path())
    server.ssh_config = server.client_config(_known_hosts_line(port, host_key))
    try:
        yield server
    finally:
        _stop_sshd(proc)


@pytest.fixture(scope="module")
def sshd_no_sftp(sshd) -> Server:
    """A second sshd with the same keys and no ``Subsystem sftp``: ssh works, SFTP (so modern scp) does not."""
    proc, port = _start_sshd(_sshd_binary(), sshd.root, sshd.host_key, "sshd-no-sftp", sftp=False)
    server = Server(sshd.root, port, sshd.user, sshd.user_key, sshd.other_key, sshd.host_key, Path())
    server.ssh_config = server.client_config(_known_hosts_line(port, sshd.host_key))
    try:
        yield server
    finally:
        _stop_sshd(proc)


@pytest.fixture(scope="module")
def model_onnx(tmp_path_factory) -> Path:
    """The shipped Fashion-MNIST ResNet-20 teacher as ONNX (a real trained model, ~1 MB)."""
    import onnx
    import torch

    from edgekd.export.onnx_export import torch_to_onnx
    from edgekd.models.checkpoint import extract_state_dict, load_checkpoint
    from edgekd.models.resnet_cifar import resnet_cifar

    model = resnet_cifar(depth=20, num_classes=10, in_channels=1)
    model.load_state_dict(extract_state_dict(load_checkpoint(TEACHER)))
    proto = torch_to_onnx(model, torch.randn(2, 1, 28, 28), opset=18, dynamic_batch=True)
    path = tmp_path_factory.mktemp("model") / "resnet20.onnx"
    onnx.save(proto, str(path))
    return path


def _wrapper(root: Path, name: str, body: str) -> Path:
    path = root / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def _remote_dirs(server: Server) -> set[str]:
    """The ssh target's remote temp dirs on the 'device' (this machine, under the server's TMPDIR)."""
    return {p.name for p in device_tmp(server.root).glob("edgekd.*") if p.is_dir()}


# ------------------------------------------------------------------------------------------- end to end
def test_named_target_profiles_a_real_model_on_the_device(sshd, model_onnx, tmp_path, monkeypatch):
    targets = tmp_path / "targets.yaml"
    fields = sshd.spec_fields(threads=[1], notes="loopback sshd, this machine")
    lines = "\n".join(f"    {k}: {v!r}" if isinstance(v, str) else f"    {k}: {v}" for k, v in fields.items())
    targets.write_text(f"targets:\n  bench:\n{lines}\n")
    monkeypatch.setenv("EDGEKD_TARGETS", str(targets))
    before = _remote_dirs(sshd)

    target = resolve_target("bench")
    assert isinstance(target, SSHTarget) and target.threads == [1]
    baseline = target.baseline()
    answer = target.run_probe(model_onnx, ProbeSettings(threads=1, warmup=2, runs=25, timeout_s=120))
    profile = to_profile(answer, baseline, target.name)

    assert profile.target == "bench" and profile.runs == 25 and profile.threads == 1 and profile.batch == 1
    lat = profile.latency_ms
    assert 0 < lat.min <= lat.p50 <= lat.p90 <= lat.p99 and lat.first > 0 and profile.load_ms > 0
    assert baseline["peak_rss_mb"] > 0 and profile.device["measurement"]["baseline_rss_mb"] > 0
    assert profile.peak_rss_mb > 0  # a ResNet-20 session adds memory over the bare interpreter
    ssh = profile.device["ssh"]
    assert ssh["destination"] == f"{sshd.user}@127.0.0.1:{sshd.port}" and ssh["notes"].startswith("loopback")
    assert ssh["python"] and profile.device["cpu"] and profile.device["logical_cores"] >= 1
    assert answer["model"] == str(model_onnx.resolve())
    assert _remote_dirs(sshd) == before, "the remote temp dir must be removed"


def test_device_sessions_get_the_server_s_own_temp_dir(sshd):
    """What makes the cleanup checks meaningful: the probe's ``mktemp`` lands where ``_remote_dirs`` looks."""
    login = [
        "-F",
        str(sshd.ssh_config),
        "-i",
        str(sshd.user_key),
        "-o",
        "BatchMode=yes",
        "-p",
        str(sshd.port),
    ]
    proc = subprocess.run(
        ["ssh", *login, f"{sshd.user}@127.0.0.1", 'echo "$TMPDIR"'],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.strip() == str(device_tmp(sshd.root)), proc.stderr


def test_ssh_url_with_query_fields_and_an_unsafe_file_name(sshd, model_onnx, tmp_path):
    odd = tmp_path / "my model; touch pwned $(id).onnx"
    shutil.copy(model_onnx, odd)
    q = f"python={sys.executable}&identity_file={sshd.user_key}&ssh_config={sshd.ssh_config}"
    target = resolve_target(f"ssh://{sshd.user}@127.0.0.1:{sshd.port}?{q}")
    answer = target.run_probe(odd, FAST)
    assert answer["runs"] == 10 and answer["inputs"][0]["shape"] == [1, 1, 28, 28]
    assert not list(Path.home().glob("pwned*")) and not list(Path("/tmp").glob("pwned*"))


# ------------------------------------------------------------------------------------- connection failures
def test_wrong_port_is_unreachable(sshd):
    closed = _free_port()
    target = SSHTarget(parse_ssh_url(f"ssh://127.0.0.1:{closed}?ssh_config={sshd.ssh_config}"))
    with pytest.raises(EdgekdError, match=r"cannot reach 127\.0\.0\.1:\d+ \(.*Connection refused"):
        target.baseline()


def test_unauthorised_key_fails_authentication(sshd):
    target = SSHTarget(validate_spec(sshd.spec_fields(identity_file=str(sshd.other_key)), "t"), name="t")
    with pytest.raises(
        EdgekdError, match=r"authentication to .* failed \(.*Permission denied.*authorized_keys"
    ):
        target.baseline()


@pytest.mark.parametrize("kind", ["changed", "unknown"])
def test_host_key_checking_stays_on(sshd, kind):
    if kind == "changed":  # known_hosts pins another key for this host: OpenSSH's MITM warning
        other = " ".join(sshd.other_key.with_suffix(".pub").read_text().split()[:2])
        config = sshd.client_config(f"[127.0.0.1]:{sshd.port} {other}\n")
        expected = r"does NOT match known_hosts.*ssh-keygen -R"
    else:
        config = sshd.client_config("")
        expected = r"is not in known_hosts.*ssh-keyscan -p \d+ 127\.0\.0\.1"
    target = SSHTarget(validate_spec(sshd.spec_fields(ssh_config=str(config)), "t"), name="t")
    with pytest.raises(EdgekdError, match=expected):
        target.baseline()


# ----------------------------------------------------------------------------------------- device failures
def test_python_without_onnxruntime_says_how_to_install(sshd, tmp_path):
    bare = _wrapper(tmp_path, "bare-python", f'exec {sys.executable} -S "$@"')  # no site-packages
    check = subprocess.run([str(bare), "-c", "import onnxruntime"], capture_output=True, text=True)
    assert check.returncode != 0, "the wrapper must really lack onnxruntime"
    target = SSHTarget(validate_spec(sshd.spec_fields(python=str(bare)), "t"), name="t")
    with pytest.raises(
        EdgekdError, match=r"has no numpy and no onnxruntime; .*pip install onnxruntime numpy"
    ):
        target.baseline()


def test_missing_python_is_named(sshd):
    target = SSHTarget(validate_spec(sshd.spec_fields(python="/nonexistent/python3"), "t"), name="t")
    with pytest.raises(EdgekdError, match=r"no Python '/nonexistent/python3' on .*install Python >= 3\.8"):
        target.baseline()


def test_probe_killed_on_the_device_is_reported_and_cleaned_up(sshd, model_onnx, tmp_path):
    # The interpreter dies by SIGKILL (as under the OOM killer) when it runs the probe; checks still pass.
    dying = _wrapper(
        tmp_path, "dying-python", f'[ "$1" = probe.py ] && kill -KILL $$\nexec {sys.executable} "$@"'
    )
    target = SSHTarget(validate_spec(sshd.spec_fields(python=str(dying)), "t"), name="t")
    before = _remote_dirs(sshd)
    with pytest.raises(EdgekdError, match=r"profiling probe on t failed \(killed by SIGKILL\)"):
        target.run_probe(model_onnx, FAST)
    assert _remote_dirs(sshd) == before


def test_probe_error_on_the_device_is_one_line(sshd, tmp_path):
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("this is not a model\n")
    target = SSHTarget(validate_spec(sshd.spec_fields(), "t"), name="t")
    with pytest.raises(
        EdgekdError, match=r"profiling probe on t failed: onnxruntime could not load notes\.onnx"
    ):
        target.run_probe(not_onnx, FAST)


def test_device_side_timeout_stops_the_probe(sshd, model_onnx):
    target = SSHTarget(validate_spec(sshd.spec_fields(), "t"), name="t")
    before = _remote_dirs(sshd)
    with pytest.raises(
        EdgekdError, match=r"timed out after 1 s measuring resnet20\.onnx; raise profile\.timeout_s"
    ):
        target.run_probe(model_onnx, ProbeSettings(threads=1, warmup=0, runs=10**7, timeout_s=1))
    assert _remote_dirs(sshd) == before


# ------------------------------------------------------------------------------------- transfers without SFTP
def test_a_device_without_sftp_profiles_end_to_end(sshd_no_sftp, model_onnx):
    """scp (SFTP since OpenSSH 9) fails there with "Connection closed"; edgekd's transfer needs only ssh."""
    scp = subprocess.run(
        [
            "scp",
            "-q",
            "-F",
            str(sshd_no_sftp.ssh_config),
            "-i",
            str(sshd_no_sftp.user_key),
            "-o",
            "BatchMode=yes",
        ]
        + ["-P", str(sshd_no_sftp.port), str(model_onnx), f"{sshd_no_sftp.user}@127.0.0.1:/dev/null"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert scp.returncode != 0 and "connection closed" in scp.stderr.lower(), "the server must lack SFTP"
    before = _remote_dirs(sshd_no_sftp)

    url = sshd_no_sftp.url()
    cfg = ProfileConfig(targets=[url], threads=[1], runs=5, warmup=1, op_profile=False)
    (profile,) = profile_model(model_onnx, cfg, target=url)

    assert profile.target == url and profile.runs == 5 and profile.latency_ms.p50 > 0
    assert profile.device["ssh"]["destination"] == f"{sshd_no_sftp.user}@127.0.0.1:{sshd_no_sftp.port}"
    assert profile.device["measurement"]["baseline_rss_mb"] > 0  # the baseline ran there too
    assert _remote_dirs(sshd_no_sftp) == before


@pytest.mark.parametrize(
    ("receiver", "expected"),
    [  # what the device's Python does when it is handed a file (other invocations run the real one)
        (
            'echo "OSError: [Errno 28] No space left on device" >&2; exit 1',
            rf"copying probe\.py over {re.escape(TRANSFER)} to .*/probe\.py failed \(OSError: \[Errno 28\] No space",
        ),
        (
            f'head -c 1000 | {sys.executable} "$@"; exit $?',
            rf"probe\.py arrived changed at .*/probe\.py \(1000 of \d+ bytes, sha256 \w+ instead of \w+\) over "
            rf"{re.escape(TRANSFER)}",
        ),
    ],
    ids=["device-disk-full", "copy-arrives-short"],
)
def test_a_failed_copy_names_the_file_and_the_transfer(sshd, tmp_path, receiver, expected):
    python = _wrapper(
        tmp_path, "python", f'case "$2" in *sha256*) {receiver};; esac\nexec {sys.executable} "$@"'
    )
    target = SSHTarget(validate_spec(sshd.spec_fields(python=str(python)), "t"), name="t")
    before = _remote_dirs(sshd)
    with pytest.raises(EdgekdError, match=rf"^target t: {expected}"):
        target.baseline()
    assert _remote_dirs(sshd) == before, "the remote temp dir must be removed after a failed copy"


# ------------------------------------------------------------------------------- names, URLs, targets.yaml
def test_resolution_order_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_TARGETS", str(tmp_path / "targets.yaml"))
    assert type(resolve_target("local")).__name__ == "LocalTarget"
    with pytest.raises(
        InputError, match=r"unknown target 'pi5'.*ssh://user@host\[:port\].*no .*targets\.yaml"
    ):
        resolve_target("pi5")
    (tmp_path / "targets.yaml").write_text("targets:\n  pi5: {host: pi5.local, user: pi, threads: [1, 4]}\n")
    spec = resolve_target("pi5").spec
    assert (spec.destination, spec.port, spec.python, spec.threads) == (
        "pi@pi5.local",
        None,
        "python3",
        [1, 4],
    )
    with pytest.raises(InputError, match=r"unknown target 'pi6'; did you mean 'pi5'"):
        resolve_target("pi6")
    with pytest.raises(InputError, match=r"target 'ssh' needs a device"):
        resolve_target("ssh")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ssh://pi@host:99999", "not a valid ssh URL"),
        ("ssh://pi@host/home", "not a valid ssh URL"),
        ("ssh://pi:secret@host", "passwords in URLs are not supported"),
        ("ssh://-oProxyCommand=x", "host: must be a plain name"),
        ("ssh://pi@host?pyhton=/x", "pyhton: unknown key; did you mean 'python'"),
        ("ssh://pi@host?threads=a", "threads must be comma-separated integers"),
    ],
)
def test_bad_urls_are_input_errors(url, message):
    with pytest.raises(InputError, match=message):
        parse_ssh_url(url)


def test_ipv6_url_and_relative_paths_in_targets_file(tmp_path):
    spec = parse_ssh_url("ssh://pi@[fe80::1]:2222?threads=1,4&connect_timeout_s=3")
    assert (spec.host, spec.port, spec.threads, spec.connect_timeout_s) == ("fe80::1", 2222, [1, 4], 3)
    (tmp_path / "keys").mkdir()
    path = tmp_path / "targets.yaml"
    path.write_text("targets:\n  jetson: {host: jet, identity_file: keys/id, notes: Orin Nano}\n")
    assert load_targets_file(path)["jetson"].identity_file == str(tmp_path / "keys" / "id")
    path.write_text("targets:\n  jetson: {hots: jet}\n")
    with pytest.raises(InputError, match=r"targets\.jetson\.hots: unknown key; did you mean 'host'"):
        load_targets_file(path)
    path.write_text("targets:\n  local: {host: x}\n")
    with pytest.raises(InputError, match="reserved"):
        load_targets_file(path)
    path.write_text("- not a mapping\n")
    with pytest.raises(InputError, match="expected a 'targets:' mapping"):
        load_targets_file(path)


def test_missing_identity_file_fails_before_connecting(tmp_path):
    with pytest.raises(InputError, match=r"identity_file .*nokey not found"):
        SSHTarget(parse_ssh_url(f"ssh://pi@host?identity_file={tmp_path / 'nokey'}"))


# ------------------------------------------------------------------------- through the CLI, into a report
def _bench_targets(sshd: Server, tmp_path: Path) -> Path:
    targets = tmp_path / "targets.yaml"
    fields = sshd.spec_fields(threads=[1], notes="loopback sshd")
    lines = "\n".join(f"    {k}: {v!r}" if isinstance(v, str) else f"    {k}: {v}" for k, v in fields.items())
    targets.write_text(f"targets:\n  bench:\n{lines}\n")
    return targets


def test_compress_profiles_on_the_remote_target_into_the_report_and_gates_exit_3(sshd, tmp_path, monkeypatch):
    """The issue's done-when: a remote profile with device state in report.json/html; a failed gate → 3."""
    import json

    from edgekd.report import validate_report
    from tests.conftest import cli, one_line_error

    monkeypatch.setenv("EDGEKD_TARGETS", str(_bench_targets(sshd, tmp_path)))
    out = tmp_path / "run"
    proc = cli(
        "compress", "recipes/quickstart.yaml", "--out", str(out),
        "--set", "data.train_limit=256", "--set", "data.eval_limit=128", "--set", "distill.epochs=0",
        # an undistilled student's logits are nearly flat, so INT8 flips many of its (random) top-1s
        "--set", "export.int8={min_agreement: 0.5}", "--set", "profile.targets=[local, bench]",
        "--set", "profile.threads=[1]", "--set", "profile.time_budget_s=0.3",
        "--set", "gates.artifact=student.int8.onnx",
        "--set", "gates.max_latency_ms={target: bench, p50: 0.0001}",
        "--set", "gates.max_size_mb=100",
    )  # fmt: skip
    error = one_line_error(proc, code=3)
    assert "1 of" in error and "max_latency_ms:student.int8.onnx@bench" in error

    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    by_name = {a["name"]: a for a in report["artifacts"]}
    assert {"teacher.onnx", "student.onnx", "student.int8.onnx"} <= set(by_name)
    for name in ("teacher.onnx", "student.onnx", "student.int8.onnx"):
        assert {p["target"] for p in by_name[name]["profiles"]} == {"local", "bench"}
    remote = next(p for p in by_name["student.int8.onnx"]["profiles"] if p["target"] == "bench")
    assert remote["device"]["ssh"]["destination"] == f"{sshd.user}@127.0.0.1:{sshd.port}"
    assert remote["device"]["cpu"] and "after" in remote["device"]  # device state before and after
    assert remote["device"]["op_profile"]["by_op_type"], "top operators measured on the device"
    gates = {g["name"]: g for g in report["gates"]}
    assert gates["max_size_mb:student.int8.onnx"]["passed"] is True
    assert not gates["max_latency_ms:student.int8.onnx@bench:threads=1:batch=1:p50"]["passed"]
    assert any(r["target"] == "bench" for r in report["speedup"])  # realisation per target
    precision = {(r["target"], r["threads"]): r for r in report["precision"]}  # per device, measured there
    assert set(precision) == {("local", 1), ("bench", 1)}
    for row in precision.values():
        assert row["artifact"] in {"student.onnx", "student.int8.onnx"} and row["metric"] == "accuracy"
        assert {c["artifact"] for c in row["candidates"]} == {"student.onnx", "student.int8.onnx"}
    html = (out / "report.html").read_text()
    assert "bench" in html and "Devices" in html and "FAIL" in html and "Which precision to ship" in html


def test_profile_command_on_a_remote_target_with_a_latency_gate(sshd, model_onnx, tmp_path, monkeypatch):
    import json

    from tests.conftest import cli, one_line_error

    monkeypatch.setenv("EDGEKD_TARGETS", str(_bench_targets(sshd, tmp_path)))
    common = ("profile", str(model_onnx), "--target", "bench", "--runs", "5", "--warmup", "1")
    ok = cli(*common, "--max-ms", "p99=10000", "--json")
    assert ok.returncode == 0, ok.stderr[-2000:]
    (profile,) = json.loads(ok.stdout)
    assert profile["target"] == "bench" and profile["runs"] == 5 and profile["threads"] == 1
    error = one_line_error(cli(*common, "--max-ms", "p50=0.0001"), code=3)
    assert "max_latency_ms:resnet20.onnx@bench" in error
    assert "--max-ms" in one_line_error(cli(*common, "--max-ms", "p95=3"), code=2)


# ------------------------------------------------------------------------------------- edgekd targets [--check]
def test_targets_lists_registered_and_named_targets(sshd, tmp_path, monkeypatch, edgekd_main):
    monkeypatch.setenv("EDGEKD_TARGETS", str(tmp_path / "targets.yaml"))
    code, out, _ = edgekd_main("targets")
    assert code == 0 and re.search(r"^local +local +this machine", out, re.M)
    assert f"no {tmp_path / 'targets.yaml'}: create it" in out and "ssh://user@host[:port]" in out

    monkeypatch.setenv("EDGEKD_TARGETS", str(_bench_targets(sshd, tmp_path)))
    code, out, _ = edgekd_main("targets")
    destination = f"{sshd.user}@127.0.0.1:{sshd.port}"
    assert code == 0 and re.search(rf"^bench +ssh +{re.escape(destination)} +1 +loopback sshd$", out, re.M)
    code, out, _ = edgekd_main("targets", "--json")
    listing = json.loads(out)
    assert [(t["name"], t["kind"]) for t in listing["targets"]] == [("local", "local"), ("bench", "ssh")]
    assert listing["targets"][1]["address"] == destination and listing["targets_file_found"] is True


@pytest.mark.parametrize(
    ("device", "code", "statuses", "failure"),
    [
        ("good", 0, ["ok", "ok", "ok", "ok"], None),
        ("no-onnxruntime", 1, ["ok", "ok", "ok", "fail"], r"not installed for .*-m pip install onnxruntime"),
        ("unreachable", 1, ["fail", "skip", "skip", "skip"], r"cannot reach 127\.0\.0\.1:\d+ \(.*refused"),
    ],
)
def test_targets_check_one_line_per_step(
    sshd, tmp_path, monkeypatch, edgekd_main, device, code, statuses, failure
):
    monkeypatch.setenv("EDGEKD_TARGETS", str(_bench_targets(sshd, tmp_path)))
    if device == "no-onnxruntime":  # numpy importable, onnxruntime not: the venv's numpy alone on the path
        import numpy

        (tmp_path / "numpy-only").mkdir()
        for package in Path(numpy.__file__).parent.parent.glob("numpy*"):
            (tmp_path / "numpy-only" / package.name).symlink_to(package)
        python = _wrapper(
            tmp_path, "python", f'PYTHONPATH={tmp_path / "numpy-only"} exec {sys.executable} -S "$@"'
        )
        name = sshd.url(python=str(python))
    else:
        name = "bench" if device == "good" else f"ssh://127.0.0.1:{_free_port()}?ssh_config={sshd.ssh_config}"

    got, out, err = edgekd_main("targets", "--check", name)
    lines = out.splitlines()
    assert got == code and lines[0].startswith(f"{name} (ssh, ")
    assert [line.split()[:2] for line in lines[1:]] == [
        [{"ok": "ok", "fail": "FAIL", "skip": "skip"}[s], step]
        for s, step in zip(statuses, ("ssh", "python", "numpy", "onnxruntime"), strict=True)
    ]
    if failure is None:
        assert err == "" and re.search(r"onnxruntime +\d+\.\d+.*CPUExecutionProvider", out)
        assert re.search(r"python +3\.\d+", out)
    else:
        assert re.search(rf"FAIL +\S+ +{failure}", out)
        (error,) = err.strip().splitlines()
        assert error.startswith(f"edgekd: error: target {name}: check failed")

    code_json, out_json, _ = edgekd_main("targets", "--check", name, "--json")
    answer = json.loads(out_json)
    assert code_json == code and answer["ok"] is (code == 0) and answer["kind"] == "ssh"
    assert [c["status"] for c in answer["checks"]] == statuses


def test_targets_check_an_unknown_name_is_bad_input(tmp_path, monkeypatch, edgekd_main):
    monkeypatch.setenv("EDGEKD_TARGETS", str(tmp_path / "targets.yaml"))
    code, out, err = edgekd_main("targets", "--check", "pi5")
    assert code == 2 and out == "" and err.startswith("edgekd: error: unknown target 'pi5'")


def test_calibrate_and_prune_to_a_latency_budget_on_the_remote_target(sshd, tmp_path, monkeypatch):
    """Issue 14 over SSH (timings are this machine's; the plumbing, cache and report are what is checked):
    ``edgekd calibrate`` builds the target's latency model through sshd, ``compress`` finds it in the cache,
    prunes to the budget, profiles the student there, records the miss in the model and re-prunes once.

    The miss is made certain, not left to the clock: the cached model is told the teacher measured half its
    real p50, so a budget of 70% of that is ~35% of the real teacher, twice what the first student measures."""
    from edgekd.report import validate_report
    from tests.conftest import cli

    monkeypatch.setenv("EDGEKD_TARGETS", str(_bench_targets(sshd, tmp_path)))
    cache = tmp_path / "latency-cache"
    monkeypatch.setenv("EDGEKD_LATENCY_CACHE", str(cache))
    data = ("--set", "data.train_limit=256", "--set", "data.eval_limit=128")
    recipe = "recipes/quickstart.yaml"
    built = cli("calibrate", recipe, "--target", "bench", "--quick", "--holdout", "2", "--json", *data)
    assert built.returncode == 0, built.stderr[-2000:]
    assert json.loads(built.stdout)["target"] == "bench"
    (model_file,) = cache.glob("*.json")
    stored = json.loads(model_file.read_text())
    stored["fit"]["teacher_ms"] *= 0.5
    stored["error"]["mape"] = 0.02
    model_file.write_text(json.dumps(stored))

    out = tmp_path / "run"
    proc = cli(
        "compress", "recipes/quickstart.yaml", "--out", str(out), *data, "--set", "distill.epochs=0",
        "--set", "prune.target=latency", "--set", "prune.reduction=0.3",
        "--set", "prune.latency={target: bench, threads: 1, quick: true, refine: true}",
        "--set", "profile.targets=[bench]", "--set", "profile.threads=[1]", "--set", "profile.time_budget_s=0.3",
        "--set", "profile.op_profile=false",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    stages = report["stages"]
    assert stages["calibrate"]["target"] == "bench" and stages["calibrate"]["cached"] is True
    assert stages["calibrate"]["cache_file"] == str(model_file)
    refine = stages["refine"]
    (first,) = refine["missed"]
    assert (
        refine["rounds"] == 1 and first["target"] == "bench" and first["model_updated"] and not first["met"]
    )
    anchors = json.loads(model_file.read_text())["fit"]["measured"]
    assert anchors[0]["measured_ms"] == pytest.approx(first["measured_ms"])
    check = stages["profile"]["latency_budget"]
    assert check["target"] == "bench" and check["budget_ms"] == pytest.approx(first["budget_ms"])
    if refine["kept_first"] is None:  # re-pruned against the corrected model: it aims lower
        assert stages["prune"]["predicted_ms"] < first["predicted_ms"]
    else:  # or the corrected model says the budget cannot be reached: the first student ships
        assert "cannot reach" in refine["kept_first"]
    assert "Latency budget" in (out / "report.md").read_text()
