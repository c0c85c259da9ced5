"""Certificates and keys of the simulated control plane, made with the ``openssl`` CLI.

One throw-away CA signs every serving and client certificate; the service
account tokens are signed with a separate RSA key. Everything lives in the
cluster's run directory and dies with it. The ``cryptography`` package is not
a dependency of TTG, so the ``openssl`` program does the work (argument
lists, never a shell).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ttg_ops.errors import PreflightError

OPENSSL_HINT = "install OpenSSL: `apt-get install -y openssl`"
_DAYS = "3650"
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Pair:
    """A certificate and its private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Every credential the components use."""

    ca: Pair
    apiserver: Pair
    kubelet_client: Pair
    kwok_serving: Pair
    admin: Pair
    controller_manager: Pair
    scheduler: Pair
    kwok_client: Pair
    sa_key: Path
    sa_pub: Path


def _openssl(*args: str) -> None:
    result = subprocess.run(
        ["openssl", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise PreflightError(
            f"`openssl {args[0]}` failed while making the simulated cluster's certificates: "
            f"{result.stderr.strip()[-400:]}"
        )


def _signed(
    ca: Pair, directory: Path, name: str, subject: str, *, usage: str, sans: str = ""
) -> Pair:
    """A P-256 key and a certificate for ``subject`` signed by ``ca``."""
    pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
    csr = directory / f"{name}.csr"
    extensions = [
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-addext",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext",
        f"extendedKeyUsage={usage}",
    ]
    if sans:
        extensions += ["-addext", f"subjectAltName={sans}"]
    _openssl("req", "-new", *_EC, "-keyout", str(pair.key), "-subj", subject, *extensions,
             "-out", str(csr))  # fmt: skip
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
             "-CAcreateserial", "-days", _DAYS, "-copy_extensions", "copyall",
             "-out", str(pair.cert))  # fmt: skip
    csr.unlink()
    return pair


def make_pki(directory: Path) -> Pki:
    """Create the CA, serving and client certificates and the service account key pair."""
    if shutil.which("openssl") is None:
        raise PreflightError("openssl is needed for the simulated cluster", hint=OPENSSL_HINT)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca = Pair(directory / "ca.crt", directory / "ca.key")
    _openssl("req", "-x509", *_EC, "-keyout", str(ca.key), "-out", str(ca.cert),
             "-days", _DAYS, "-subj", "/CN=ttg-simcluster-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")  # fmt: skip
    sa_key = directory / "sa.key"
    sa_pub = directory / "sa.pub"
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", str(sa_key))  # fmt: skip
    _openssl("pkey", "-in", str(sa_key), "-pubout", "-out", str(sa_pub))

    loopback = "IP:127.0.0.1,DNS:localhost"
    in_cluster = (
        "IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
        "DNS:kubernetes.default.svc.cluster.local"
    )

    def server(name: str, subject: str, sans: str) -> Pair:
        return _signed(ca, directory, name, subject, usage="serverAuth", sans=sans)

    def client(name: str, subject: str) -> Pair:
        return _signed(ca, directory, name, subject, usage="clientAuth")

    return Pki(
        ca=ca,
        apiserver=server("apiserver", "/CN=kube-apiserver", f"{loopback},{in_cluster}"),
        # The API server reaches kwok's kubelet endpoint (pod logs) with this identity.
        kubelet_client=client(
            "kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client"
        ),
        kwok_serving=server("kwok-serving", "/CN=kwok", loopback),
        admin=client("admin", "/O=system:masters/CN=kubernetes-admin"),
        controller_manager=client("controller-manager", "/CN=system:kube-controller-manager"),
        scheduler=client("scheduler", "/CN=system:kube-scheduler"),
        # kwok plays every kubelet and patches any pod or node: it runs as a cluster admin.
        kwok_client=client("kwok-client", "/O=system:masters/CN=kwok-controller"),
        sa_key=sa_key,
        sa_pub=sa_pub,
    )
