"""Keys and certificates gpuctl makes and keeps beside the inventory.

For `inventories/prod.py` they live in `inventories/.gpuctl/prod/` (folder 0700):

* `HOST.api-key` (0600): the gateway's bearer key for HOST, when the inventory does not name one;
* `ca.pem` (0644, hand it to clients) and `ca-key.pem` (0600): gpuctl's private CA;
* `HOST.pem` / `HOST-key.pem` (0644 / 0600): HOST's gateway certificate, issued by that CA.

A `Keystore` opened with `write=False` (dry runs) never writes: what is missing is made in memory
for this run only, so a dry run can show the change without leaving anything behind.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gpuctl.errors import GpuctlError

KEY_PREFIX = "sk-gpuctl-"
CA_DAYS = 3650
CERT_DAYS = 365
RENEW_BEFORE_DAYS = 30


def new_api_key() -> str:
    """A fresh bearer key: 256 random bits, URL-safe, with a prefix secret scanners can spot."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass
class ServerCert:
    """A certificate chain and its private key, both PEM."""

    chain_pem: str
    key_pem: str


@dataclass
class Keystore:
    """The folder of one inventory's generated secrets (see the module docstring)."""

    folder: Path
    write: bool = True
    _memory: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def for_inventory(cls, inventory_path: Path, write: bool = True) -> Keystore:
        return cls(inventory_path.parent / ".gpuctl" / inventory_path.stem, write)

    # -- files -------------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        return self.folder / name

    def read(self, name: str) -> str | None:
        if name in self._memory:
            return self._memory[name]
        try:
            return self.path(name).read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise GpuctlError(f"cannot read {self.path(name)}: {exc.strerror}") from None

    def store(self, name: str, text: str, mode: int) -> None:
        """Write NAME atomically with MODE (created with it: never briefly world-readable)."""
        if not self.write:
            self._memory[name] = text
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.folder.chmod(0o700)
            ignore = self.folder.parent / ".gitignore"
            if not ignore.exists():
                ignore.write_text("# gpuctl's generated keys and certificates: never commit them\n*\n")
            temp = self.path(f".{name}.tmp")
            temp.unlink(missing_ok=True)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.replace(temp, self.path(name))
        except OSError as exc:
            raise GpuctlError(f"cannot write {self.path(name)}: {exc.strerror}") from None

    # -- API keys ----------------------------------------------------------------------------

    def api_key_name(self, host: str) -> str:
        return f"{host}.api-key"

    def api_key(self, host: str) -> str | None:
        """HOST's generated gateway key, if there is one."""
        text = self.read(self.api_key_name(host))
        return text.strip() if text and text.strip() else None

    def ensure_api_key(self, host: str) -> str:
        """HOST's generated gateway key, made on first use."""
        return self.api_key(host) or self.rotate_api_key(host)

    def rotate_api_key(self, host: str) -> str:
        """Replace HOST's gateway key with a new one (deploy it to take effect)."""
        key = new_api_key()
        self.store(self.api_key_name(host), key + "\n", 0o600)
        return key

    # -- private CA --------------------------------------------------------------------------

    @property
    def ca_path(self) -> Path:
        """The CA certificate clients trust (private-ca gateways)."""
        return self.path("ca.pem")

    def ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """The private CA, created on first use."""
        cert_pem, key_pem = self.read("ca.pem"), self.read("ca-key.pem")
        if cert_pem and key_pem:
            key = serialization.load_pem_private_key(key_pem.encode(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            return x509.load_pem_x509_certificate(cert_pem.encode()), key
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"gpuctl private CA ({self.folder.name})")])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        self.store("ca-key.pem", _key_pem(key), 0o600)
        self.store("ca.pem", cert.public_bytes(serialization.Encoding.PEM).decode(), 0o644)
        return cert, key

    def ca_pem(self) -> str:
        """The private CA's certificate (PEM), created on first use."""
        cert, _ = self.ca()
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    def server_cert(self, host: str, names: list[str]) -> ServerCert:
        """HOST's gateway certificate for NAMES (DNS names or IPs), reissued when missing, issued by
        another CA, for other names, or within RENEW_BEFORE_DAYS of expiry."""
        ca_cert, ca_key = self.ca()
        chain, key_pem = self.read(f"{host}.pem"), self.read(f"{host}-key.pem")
        if chain and key_pem and _still_good(chain, ca_cert, names):
            return ServerCert(chain, key_pem)
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        sans: list[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        chain = cert.public_bytes(serialization.Encoding.PEM).decode()
        chain += ca_cert.public_bytes(serialization.Encoding.PEM).decode()
        key_pem = _key_pem(key)
        self.store(f"{host}-key.pem", key_pem, 0o600)
        self.store(f"{host}.pem", chain, 0o644)
        return ServerCert(chain, key_pem)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _still_good(chain_pem: str, ca_cert: x509.Certificate, names: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificates(chain_pem.encode())[0]
        cert.verify_directly_issued_by(ca_cert)
    except Exception:  # noqa: BLE001 - any doubt (unreadable, another issuer) means reissue
        return False
    if cert.not_valid_after_utc - _now() < dt.timedelta(days=RENEW_BEFORE_DAYS):
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))
    return have == set(names)
