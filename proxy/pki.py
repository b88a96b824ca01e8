"""The lab PKI: one command makes a lab CA and every certificate the TLS labs use.

    python -m proxy pki init [--dir DIR] [--names www.lab.test,api.lab.test]
                             [--backends b1,b2,b3,b4] [--clients alice] [--force]
    python -m proxy pki show [--dir DIR]
    python -m proxy pki path [--dir DIR]

Theory of operation
-------------------
Everything lives in one local folder, by default `$LBLAB_STATE_DIR/pki`, else
`<repo>/var/pki` (`var/` is gitignored: no key is ever committed). `init`
writes, with cryptography (EC P-256 keys, fast handshakes):

    ca.pem, ca.key                   the lab CA (clients and the proxy trust ca.pem)
    <name>.pem, <name>.key           a server certificate per --names entry
                                     (what the proxy serves when it terminates TLS)
    <backend>.pem, <backend>.key     a certificate per --backends entry, for the
                                     backend's own HTTPS (re-encryption, passthrough);
                                     names: b1, b1.lab.test, localhost, 127.0.0.1, ::1
    client-<who>.pem, .key           client certificates for mTLS (clientAuth)
    wrong-selfsigned.pem, .key       self-signed, for every name above: valid names,
                                     untrusted issuer ("unknown CA" failures)
    wrong-name.pem, .key             signed by the lab CA, but only for wrong.lab.test
                                     ("hostname mismatch" failures)

`init` is idempotent: an existing CA is kept and only missing files are
issued; `--force` makes a new CA and reissues everything. Keys are written
0600.

Config files refer to these as `pki:<file>` (`cert: pki:www.lab.test.pem`)
or, for a certificate and its key, `pki: www.lab.test`; `resolve()` maps such
a reference to a path in `default_dir()`. The toy backends read the same
files (`python -m labs.backend --tls --cert var/pki/b1.pem --key var/pki/b1.key`).
"""
from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PREFIX = "pki:"
DEFAULT_NAMES = ("www.lab.test", "api.lab.test")
DEFAULT_BACKENDS = ("b1", "b2", "b3", "b4")
DEFAULT_CLIENTS = ("alice",)
WRONG_NAME = "wrong.lab.test"
LEAF_DAYS = 397
CA_DAYS = 3650


def default_dir() -> Path:
    """$LBLAB_STATE_DIR/pki, else <repo>/var/pki."""
    state = os.environ.get("LBLAB_STATE_DIR")
    return (Path(state) if state else REPO / "var") / "pki"


def resolve(ref: str, directory: Path | None = None) -> Path:
    """`pki:www.lab.test.pem` -> <pki dir>/www.lab.test.pem; anything else is a plain path."""
    if ref.startswith(PREFIX):
        return (directory or default_dir()) / ref[len(PREFIX):]
    return Path(ref).expanduser()


def is_pki_ref(ref: str) -> bool:
    return ref.startswith(PREFIX)


def missing_hint(ref: str) -> str:
    if is_pki_ref(ref):
        return (f"create the lab PKI with `python -m proxy pki init` (it writes {default_dir()}; "
                "set LBLAB_STATE_DIR to use another folder)")
    return "check the path (relative paths start from the proxy's working directory)"


# ---------------------------------------------------------------- issuing

@dataclass
class Issued:
    path: Path
    what: str
    created: bool


def _x509():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _key():
    _, _, _, ec, _, _ = _x509()
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key) -> None:
    _, _, serialization, _, _, _ = _x509()
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def _write_cert(path: Path, cert) -> None:
    _, _, serialization, _, _, _ = _x509()
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _san(names: list[str]):
    x509 = _x509()[0]
    out = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(out)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)


def _make_ca():
    x509, hashes, _, _, _, NameOID = _x509()
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "LBLab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "LBLab lab CA (not for real use)")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _issue(ca_cert, ca_key, common_name: str, names: list[str], client: bool = False,
           self_signed: bool = False):
    x509, hashes, _, _, EKU, NameOID = _x509()
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "LBLab"),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(subject if self_signed else ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(
                   [EKU.CLIENT_AUTH] if client else [EKU.SERVER_AUTH]), critical=False))
    if names:
        builder = builder.add_extension(_san(names), critical=False)
    if not self_signed:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False)
    cert = builder.sign(key if self_signed else ca_key, hashes.SHA256())
    return cert, key


def backend_names(backend: str) -> list[str]:
    """The names a backend's certificate carries (what `tls.server_name` may be)."""
    return [backend, f"{backend}.lab.test", "localhost", "127.0.0.1", "::1"]


def init(directory: Path | None = None, names=DEFAULT_NAMES, backends=DEFAULT_BACKENDS,
         clients=DEFAULT_CLIENTS, force: bool = False) -> list[Issued]:
    """Create (or complete) the lab PKI in `directory`; returns what was written or kept."""
    x509, _, serialization, _, _, _ = _x509()
    directory = Path(directory or default_dir())
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    out: list[Issued] = []
    ca_pem, ca_key_path = directory / "ca.pem", directory / "ca.key"
    new_ca = force or not (ca_pem.exists() and ca_key_path.exists())
    if new_ca:
        ca_cert, ca_key = _make_ca()
        _write_cert(ca_pem, ca_cert)
        _write_key(ca_key_path, ca_key)
    else:
        ca_cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
    out.append(Issued(ca_pem, "lab CA", new_ca))

    every_server_name = [*names, *(n for b in backends for n in backend_names(b))]
    plan: list[tuple[str, str, list[str], dict]] = []
    for name in names:
        plan.append((name, f"server certificate for {name}", [name], {}))
    for b in backends:
        plan.append((b, f"backend {b}'s own certificate", backend_names(b), {}))
    for who in clients:
        plan.append((f"client-{who}", f"client certificate for {who} (mTLS)", [], {"client": True}))
    plan.append(("wrong-selfsigned", "self-signed: right names, untrusted issuer",
                 list(dict.fromkeys(every_server_name)), {"self_signed": True}))
    plan.append(("wrong-name", f"signed by the lab CA for {WRONG_NAME} only", [WRONG_NAME], {}))

    for stem, what, sans, kw in plan:
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        fresh = new_ca or not (cert_path.exists() and key_path.exists())
        if fresh:
            common = sans[0] if sans else stem.removeprefix("client-")
            cert, key = _issue(ca_cert, ca_key, common, sans, **kw)
            _write_cert(cert_path, cert)
            _write_key(key_path, key)
        out.append(Issued(cert_path, what, fresh))
    readme = directory / "README.txt"
    readme.write_text(
        "LBLab lab PKI: made by `python -m proxy pki init`. Test certificates only; the\n"
        "keys here are not secret and must never protect anything real. Delete this folder\n"
        "and run the command again to start over (or add --force).\n")
    return out


# ---------------------------------------------------------------- describing

def describe(path: Path) -> dict:
    """Subject, issuer, names and expiry of one PEM certificate (for `show` and the proxy)."""
    x509 = _x509()[0]
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return describe_cert(cert)


def describe_cert(cert) -> dict:
    x509 = _x509()[0]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        names += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = []
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "names": names,
        "not_after": cert.not_valid_after_utc.isoformat(),
        "self_signed": cert.subject == cert.issuer,
    }


def dns_names(path: Path) -> list[str]:
    """The DNS names (SAN, else the CN) a certificate file is valid for."""
    x509, _, _, _, _, NameOID = _x509()
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [a.value.lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return names


# ---------------------------------------------------------------- CLI

def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy pki",
                                     description="The lab PKI (test certificates only).")
    sub = parser.add_subparsers(dest="command", required=True)
    p_init = sub.add_parser("init", help="create the lab CA and certificates (idempotent)")
    p_show = sub.add_parser("show", help="list the certificates, their names and expiry")
    p_path = sub.add_parser("path", help="print the PKI folder")
    for p in (p_init, p_show, p_path):
        p.add_argument("--dir", type=Path, default=None,
                       help=f"PKI folder (default {default_dir()})")
    p_init.add_argument("--names", default=",".join(DEFAULT_NAMES),
                        help="server names the proxy terminates TLS for (comma-separated)")
    p_init.add_argument("--backends", default=",".join(DEFAULT_BACKENDS),
                        help="backends that get their own certificate (comma-separated)")
    p_init.add_argument("--clients", default=",".join(DEFAULT_CLIENTS),
                        help="mTLS client certificates to issue (comma-separated)")
    p_init.add_argument("--force", action="store_true",
                        help="make a new CA and reissue every certificate")
    args = parser.parse_args(argv)
    directory = args.dir or default_dir()
    if args.command == "path":
        print(directory)
        return 0
    if args.command == "show":
        if not (directory / "ca.pem").exists():
            print(f"no lab PKI in {directory}: run `python -m proxy pki init`", file=sys.stderr)
            return 1
        for path in sorted(directory.glob("*.pem")):
            info = describe(path)
            print(f"{path.name:28} {info['subject']:45} names={','.join(info['names']) or '-'}"
                  f" until={info['not_after'][:10]}"
                  + (" self-signed" if info["self_signed"] else ""))
        return 0
    issued = init(directory, _csv(args.names), _csv(args.backends), _csv(args.clients),
                  force=args.force)
    print(f"lab PKI in {directory}")
    for item in issued:
        print(f"  {'created' if item.created else 'kept   '} {item.path.name:28} {item.what}")
    print("Trust it in clients with the CA file: "
          f"curl --cacert {directory / 'ca.pem'} ... ; config files say pki:<file>.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
