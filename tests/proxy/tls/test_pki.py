"""The lab PKI command: what it writes, that it is idempotent, that openssl agrees."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

from proxy import pki
from tests.proxy.e2e.support import REPO


def verify(ca, cert) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", "verify", "-CAfile", str(ca), str(cert)],
                          capture_output=True, text=True, timeout=30)


def test_init_writes_the_ca_every_certificate_and_the_wrong_ones(lab_pki):
    names = {p.name for p in lab_pki.iterdir()}
    expected = {"ca", "www.lab.test", "api.lab.test", "b1", "b2", "b3", "b4",
                "client-alice", "wrong-selfsigned", "wrong-name"}
    for stem in expected:
        assert {f"{stem}.pem", f"{stem}.key"} <= names, stem
        mode = stat.S_IMODE(os.stat(lab_pki / f"{stem}.key").st_mode)
        assert mode == 0o600, f"{stem}.key is {oct(mode)}: keys are private to the user"
    ca = lab_pki / "ca.pem"
    for stem in ("www.lab.test", "api.lab.test", "b1", "client-alice", "wrong-name"):
        assert verify(ca, lab_pki / f"{stem}.pem").returncode == 0, stem
    assert verify(ca, lab_pki / "wrong-selfsigned.pem").returncode != 0
    assert pki.dns_names(lab_pki / "www.lab.test.pem") == ["www.lab.test"]
    assert pki.dns_names(lab_pki / "b1.pem") == ["b1", "b1.lab.test", "localhost"]
    assert pki.dns_names(lab_pki / "wrong-name.pem") == ["wrong.lab.test"]
    assert "www.lab.test" in pki.dns_names(lab_pki / "wrong-selfsigned.pem")


def test_init_is_idempotent_and_force_starts_over(tmp_path):
    directory = tmp_path / "pki"
    first = pki.init(directory, names=["x.lab.test"], backends=["b1"], clients=[])
    assert all(item.created for item in first)
    ca = (directory / "ca.pem").read_bytes()
    again = pki.init(directory, names=["x.lab.test", "y.lab.test"], backends=["b1"], clients=[])
    created = {i.path.name for i in again if i.created}
    assert created == {"y.lab.test.pem"}, "only what was missing is issued"
    assert (directory / "ca.pem").read_bytes() == ca
    assert verify(directory / "ca.pem", directory / "y.lab.test.pem").returncode == 0
    pki.init(directory, names=["x.lab.test"], backends=["b1"], clients=[], force=True)
    assert (directory / "ca.pem").read_bytes() != ca
    assert verify(directory / "ca.pem", directory / "x.lab.test.pem").returncode == 0


def test_default_dir_follows_lblab_state_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LBLAB_STATE_DIR", str(tmp_path))
    assert pki.default_dir() == tmp_path / "pki"
    assert pki.resolve("pki:ca.pem") == tmp_path / "pki" / "ca.pem"
    assert str(pki.resolve("/etc/x.pem")) == "/etc/x.pem"
    monkeypatch.delenv("LBLAB_STATE_DIR")
    assert pki.default_dir() == REPO / "var" / "pki"


def test_cli_init_show_path(tmp_path):
    directory = tmp_path / "cli-pki"

    def run(*args):
        return subprocess.run([sys.executable, "-m", "proxy", "pki", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=60)

    done = run("init", "--dir", str(directory), "--names", "shop.lab.test", "--backends", "s1",
               "--clients", "bob")
    assert done.returncode == 0, done.stderr
    assert "created shop.lab.test.pem" in done.stdout and "created client-bob.pem" in done.stdout
    again = run("init", "--dir", str(directory), "--names", "shop.lab.test", "--backends", "s1",
                "--clients", "bob")
    assert "created" not in again.stdout and again.stdout.count("kept") == 6
    show = run("show", "--dir", str(directory))
    assert show.returncode == 0 and "CN=shop.lab.test" in show.stdout
    assert run("path", "--dir", str(directory)).stdout.strip() == str(directory)
    assert run("show", "--dir", str(tmp_path / "none")).returncode == 1
