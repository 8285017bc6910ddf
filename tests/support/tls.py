"""Certificates for TLS tests, made by the openssl CLI (installed by the test command:
a missing openssl fails the test, it never skips it)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certs:
    """A CA, and a server certificate for 127.0.0.1 signed by it, with the server's key."""

    ca: Path
    cert: Path
    key: Path


def make_certs(directory: Path) -> Certs:
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl CLI not installed (the Makefile's APT_PACKAGES has it)"
    ca, ca_key = directory / "ca.pem", directory / "ca-key.pem"
    cert, key, csr = directory / "server.pem", directory / "server-key.pem", directory / "s.csr"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "1", "-subj", "/CN=meetq test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(ext))  # fmt: skip
    return Certs(ca, cert, key)


def tls_args(certs: Certs, port: int) -> tuple[str, ...]:
    """redis-server arguments for a TLS port with these certificates (no client certs)."""
    return ("--tls-port", str(port), "--tls-cert-file", str(certs.cert),
            "--tls-key-file", str(certs.key), "--tls-ca-cert-file", str(certs.ca),
            "--tls-auth-clients", "no")  # fmt: skip
