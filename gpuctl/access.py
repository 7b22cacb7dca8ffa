"""How gpuctl reaches a host and its engines: the one place that decides.

- `Connection`: SSH user, port, key, known hosts and sudo of a host, built once from its spec and
  given to pyinfra (deploy) and to the `ssh` runner (verify, status) alike.
- `client_access`: how a client reaches engine E of host H: through the host's gateway (https, the
  gateway key, the CA gpuctl handed out), through an SSH tunnel when the engine listens on loopback,
  or directly; with the key to send and the TLS trust. verify, status, bench and keys ask it.
- `gateway_material`: the gateway's key and certificate as deploy installs them (made when missing).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import requests

from gpuctl.endpoints import key_name, upstream_key_name
from gpuctl.errors import GpuctlError
from gpuctl.render import EndpointMaterial, GatewayMaterial
from gpuctl.spec import EndpointSpec, GatewaySpec, HostSpec, OllamaSpec, SecretRef, VllmSpec, bracketed, is_loopback

if TYPE_CHECKING:
    from gpuctl.keystore import Keystore, ServerCert
    from gpuctl.verify.remote import Remote

Engine = VllmSpec | OllamaSpec
Via = Literal["gateway", "ssh tunnel", "direct"]


@dataclass(frozen=True)
class Connection:
    """How to reach a host's shell: over SSH with the inventory's settings, or locally."""

    name: str
    local: bool
    address: str
    user: str
    port: int
    key_file: str | None
    known_hosts_file: str | None
    strict_host_key_checking: str
    sudo: bool
    """Commands run through sudo: the spec's `sudo`, or by default whenever the user is not root (never locally,
    never for a user-level install)."""

    @classmethod
    def of(cls, spec: HostSpec) -> Connection:
        def expanded(path: str | None) -> str | None:
            return str(Path(path).expanduser()) if path else None

        return cls(
            name=spec.name,
            local=spec.local,
            address=spec.address or "127.0.0.1",
            user=spec.ssh_user,
            port=spec.ssh_port,
            key_file=expanded(spec.ssh_key),
            known_hosts_file=expanded(spec.ssh_known_hosts_file),
            strict_host_key_checking=str(spec.ssh_strict_host_key_checking),
            sudo=not spec.local
            and spec.install == "system"
            and (spec.sudo if spec.sudo is not None else spec.ssh_user != "root"),
        )

    def pyinfra_host(self) -> tuple[str, dict[str, Any]]:
        """The (name, data) pair pyinfra's Inventory takes for this host."""
        data: dict[str, Any] = {"gpuctl_name": self.name}
        if self.local:
            return "@local", data
        data.update(
            ssh_hostname=self.address,
            ssh_user=self.user,
            ssh_port=self.port,
            ssh_strict_host_key_checking=self.strict_host_key_checking,
        )
        if self.key_file:
            data["ssh_key"] = self.key_file
        if self.known_hosts_file:
            data["ssh_known_hosts_file"] = self.known_hosts_file
        if self.sudo:
            data["_sudo"] = True
        return self.name, data

    def ssh_argv(self, connect_timeout_s: int) -> list[str]:
        """`ssh` with the same settings, up to (not including) the destination."""
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout_s}"]
        argv += ["-o", f"StrictHostKeyChecking={self.strict_host_key_checking}", "-p", str(self.port)]
        if self.known_hosts_file:
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts_file}"]
        if self.key_file:
            argv += ["-i", self.key_file, "-o", "IdentitiesOnly=yes"]
        return argv

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.address}"


# -- clients of an engine ---------------------------------------------------------------------------


class PinnedTrustSession(requests.Session):
    """A session whose `verify` wins over REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the environment
    (requests otherwise lets those replace a session's CA file)."""

    def merge_environment_settings(self, url, proxies, stream, verify, cert):  # type: ignore[no-untyped-def]
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None:
            settings["verify"] = self.verify
        return settings


@dataclass
class GatewayAccess:
    """How a client reaches one engine through the gateway."""

    base_url: str
    api_key: str
    verify: str | bool
    """requests' `verify`: the CA file to trust, or True for the system's CAs."""

    def session(self) -> requests.Session:
        """A session that trusts the right CA and sends the key on every request."""
        http = PinnedTrustSession()
        http.verify = self.verify
        http.headers["Authorization"] = f"Bearer {self.api_key}"
        return http


@dataclass
class EngineAccess:
    """How a client reaches one engine: `open()` yields the base URL (a tunnel lives as long as the context)."""

    via: Via
    api_key: str | None
    key_required: bool
    """Whether the engine refuses requests without the key (vLLM with api_key, any engine behind a gateway)."""
    verify: str | bool
    open: Callable[[], AbstractContextManager[str]]
    url: str | None = None
    """The base URL when it is known before opening (gateway), for reports."""
    gateway: GatewayAccess | None = None


def gateway_access(host: HostSpec, engine: Engine, keystore: Keystore | None, base_dir: Path) -> GatewayAccess:
    """The URL, key and trust for ENGINE behind HOST's gateway (never creates a key)."""
    gateway = host.gateway
    assert gateway is not None
    if keystore is None:
        raise GpuctlError(f"{host.name}: the gateway's key and CA are in the inventory's keystore, and none is open")
    if gateway.api_key is not None:
        key = gateway.api_key.resolve(base_dir)
    else:
        found = keystore.api_key(host.name)
        if found is None:
            raise GpuctlError(
                f"{host.name}: no gateway key in {keystore.path(keystore.api_key_name(host.name))} "
                "(gpuctl deploy creates it)"
            )
        key = found
    ca = trusted_ca(gateway, keystore, base_dir)
    return GatewayAccess(host.gateway_url(engine), key, str(ca) if ca else True)


def trusted_ca(listener: GatewaySpec, keystore: Keystore, base_dir: Path) -> Path | None:
    """The CA clients trust for a gateway or a fleet endpoint (its listener): gpuctl's own for a private CA,
    the provided ca_file, or None for the system's CAs (ACME, or a provided certificate from a public CA)."""
    if listener.tls == "private-ca":
        return keystore.ca_path
    if listener.tls == "provided" and listener.ca_file:
        return beside(base_dir, listener.ca_file)
    return None


def endpoint_access(front: HostSpec, endpoint: EndpointSpec, keystore: Keystore, base_dir: Path) -> GatewayAccess:
    """The URL, key and trust clients use for a fleet endpoint (never creates a key)."""
    if endpoint.api_key is not None:
        key = endpoint.api_key.resolve(base_dir)
    else:
        found = keystore.api_key(key_name(endpoint))
        if found is None:
            where = keystore.path(keystore.api_key_name(key_name(endpoint)))
            raise GpuctlError(f"endpoint {endpoint.name}: no key in {where} (gpuctl deploy of {front.name} creates it)")
        key = found
    ca = trusted_ca(endpoint.listener(), keystore, base_dir)
    return GatewayAccess(endpoint.url(front), key, str(ca) if ca else True)


def engine_key(engine: Engine, base_dir: Path) -> str | None:
    """The engine's own API key (vLLM's --api-key), resolved; None when it has none."""
    return engine.api_key.resolve(base_dir) if isinstance(engine, VllmSpec) and engine.api_key else None


def key_from_env(variable: str | None) -> str | None:
    """--api-key-env VAR: the key held by environment variable VAR (an error when it is unset)."""
    if not variable:
        return None
    import os

    value = os.environ.get(variable)
    if not value:
        raise GpuctlError(f"--api-key-env {variable}: environment variable is not set")
    return value


def via_without_gateway(host: HostSpec, engine: Engine) -> Via:
    return "ssh tunnel" if not host.local and is_loopback(engine.bind) else "direct"


def client_access(
    host: HostSpec,
    engine: Engine,
    *,
    keystore: Keystore | None,
    base_dir: Path,
    remote: Remote | None = None,
    direct: bool = False,
) -> EngineAccess:
    """How a client reaches ENGINE: through HOST's gateway as its clients do, unless DIRECT (or no
    gateway): then the engine itself, through an SSH tunnel when it listens on loopback.

    Raises GpuctlError when the gateway's key cannot be found (deploy creates it)."""
    if host.gateway is not None and not direct:
        gateway = gateway_access(host, engine, keystore, base_dir)
        return EngineAccess(
            via="gateway",
            api_key=gateway.api_key,
            key_required=True,
            verify=gateway.verify,
            open=lambda: contextlib.nullcontext(gateway.base_url),
            url=gateway.base_url,
            gateway=gateway,
        )
    from gpuctl.verify.remote import Remote

    shell = remote or Remote(host)
    key = engine_key(engine, base_dir)
    return EngineAccess(
        via=via_without_gateway(host, engine),
        api_key=key,
        key_required=key is not None,
        verify=True,
        open=lambda: engine_endpoint(shell, host, engine),
    )


@contextlib.contextmanager
def engine_endpoint(remote: Remote, host: HostSpec, engine: Engine) -> Iterator[str]:
    """The engine's own base URL from here: direct, or an SSH tunnel when it listens on loopback."""
    bind, port = engine.bind, engine.port
    if host.local:
        yield f"http://{bracketed('127.0.0.1' if bind in ('0.0.0.0', '::') else bind)}:{port}"
    elif is_loopback(bind):
        with remote.tunnel(bind, port) as url:
            yield url
    else:
        target = host.address if bind in ("0.0.0.0", "::") else bind
        yield f"http://{bracketed(target or '')}:{port}"


# -- the gateway's own material (deploy) ------------------------------------------------------------


def certificate_names(host: HostSpec) -> list[str]:
    """The names a private-CA gateway certificate covers: domain, address, host name (and loopback for local)."""
    names = [n for n in (host.gateway.domain if host.gateway else None, host.address, host.name) if n]
    if host.local:
        names += ["localhost", "127.0.0.1"]
    names += [endpoint.upstream_name for endpoint in host.behind_endpoints]  # checked by the endpoints' fronts
    return list(dict.fromkeys(names))


def gateway_material(
    host: HostSpec, base_dir: Path, keystore: Keystore | None, resolve: Callable[[SecretRef], str]
) -> GatewayMaterial | None:
    """HOST's gateway key and certificate: from the inventory's references, or made by the keystore."""
    gateway = host.gateway
    if gateway is None:
        return None
    if gateway.api_key is None and keystore is None:
        raise GpuctlError("gateway: the key is generated by gpuctl, but no keystore is open")
    api_key = resolve(gateway.api_key) if gateway.api_key is not None else keystore.ensure_api_key(host.name)  # type: ignore[union-attr]
    if host.behind_endpoints and keystore is None:
        raise GpuctlError("gateway: the keys of the fleet endpoints it serves behind are in the keystore, none is open")
    accepted = tuple(keystore.ensure_api_key(upstream_key_name(e)) for e in host.behind_endpoints)  # type: ignore[union-attr]
    cert = None
    if gateway.tls == "private-ca":
        if keystore is None:
            raise GpuctlError("gateway: a private-CA certificate needs the keystore")
        cert = keystore.server_cert(host.name, certificate_names(host))
    elif gateway.tls == "provided":
        cert = provided_cert(gateway, base_dir, resolve)
    return GatewayMaterial(api_key, cert, accepted)


def provided_cert(
    gateway: GatewaySpec, base_dir: Path, resolve: Callable[[SecretRef], str], where: str = "gateway"
) -> ServerCert:
    """The certificate chain and key the inventory provides (tls="provided"), checked to be PEM; errors
    name WHERE's field."""
    from gpuctl.keystore import ServerCert

    assert gateway.cert_file is not None and gateway.key_file is not None
    path = beside(base_dir, gateway.cert_file)
    try:
        chain = path.read_text()
    except OSError as exc:
        raise GpuctlError(f"{where}.cert_file: cannot read {path}: {exc.strerror}") from None
    if "BEGIN CERTIFICATE" not in chain:
        raise GpuctlError(f"{where}.cert_file: {path} holds no PEM certificate")
    key = resolve(gateway.key_file)
    if "PRIVATE KEY" not in key:
        raise GpuctlError(f"{where}.key_file: {gateway.key_file.describe()} holds no PEM private key")
    return ServerCert(chain if chain.endswith("\n") else chain + "\n", key + "\n")


def endpoint_material(
    front: HostSpec,
    endpoint: EndpointSpec,
    base_dir: Path,
    keystore: Keystore | None,
    resolve: Callable[[SecretRef], str],
) -> EndpointMaterial:
    """A fleet endpoint's keys and certificate on its FRONT: from the inventory's references, or the keystore."""
    if keystore is None:
        raise GpuctlError(f"endpoint {endpoint.name}: its keys are in the inventory's keystore, and none is open")
    listener = endpoint.listener()
    api_key = resolve(endpoint.api_key) if endpoint.api_key is not None else keystore.ensure_api_key(key_name(endpoint))
    if listener.tls == "provided":
        cert = provided_cert(listener, base_dir, resolve, f"endpoint {endpoint.name}")
    elif listener.tls == "acme":
        cert = None  # certbot makes it on the front
    else:
        names = [n for n in (endpoint.domain, front.address, front.name) if n]
        cert = keystore.server_cert(key_name(endpoint), list(dict.fromkeys(names)))
    upstream_key = keystore.ensure_api_key(upstream_key_name(endpoint))
    return EndpointMaterial(api_key, upstream_key, cert, keystore.ca_pem())


def beside(base_dir: Path, path: str) -> Path:
    """PATH as the inventory means it: ~ expanded, relative to the inventory's folder."""
    expanded = Path(path).expanduser()
    return expanded if expanded.is_absolute() else base_dir / expanded
