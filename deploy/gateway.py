"""The gateway: nginx from the distribution in front of the loopback engines (TLS + bearer key).

Why nginx: its master process runs as root and reads the configuration and TLS key before the
workers drop to www-data, so the key files stay 0600 root; `reload` swaps keys and certificates
gracefully (in-flight streams finish on the old workers); it is in every distribution. Caddy would
bring ACME built in, but runs as its own user, so that user would have to read the key.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import Directory, Link
from pyinfra.operations import files, server
from pyinfra.operations.util import any_changed

from gpuctl.deploy.facts import FileText
from gpuctl.deploy.files import put_rendered
from gpuctl.deploy.packages import apt_installed
from gpuctl.deploy.scripts import script_command
from gpuctl.deploy.units import running_and_enabled
from gpuctl.host_layout import (
    ACME_WEBROOT,
    GATEWAY_TLS_CERT,
    GATEWAY_TLS_KEY,
    LETSENCRYPT_LIVE,
    NGINX_DEFAULT_SITE,
    NGINX_DIR,
)
from gpuctl.render import GatewayFiles
from gpuctl.spec import GatewaySpec, HostSpec


@deploy("Gateway (nginx)")
def gateway(spec: HostSpec, rendered: GatewayFiles) -> None:
    """Install nginx, put the gateway's files, check them with `nginx -t`, then reload on change."""
    gw = spec.gateway
    assert gw is not None
    packages = ["nginx"] + (["certbot"] if gw.tls == "acme" else [])
    apt_installed("nginx" + (" and certbot" if gw.tls == "acme" else ""), packages)
    changes = [remove_default_site()]
    if gw.tls == "acme":
        changes += acme_bootstrap(gw)
    changes += [put_rendered(item) for item in rendered.all()]
    check_and_reload(changes, "nginx -t (configuration and certificate check)", "Reload nginx")
    if gw.tls == "acme":
        acme_certificate(gw)


def check_and_reload(changes: list, check: str, reload: str) -> None:
    """After CHANGES to nginx's files: `nginx -t` (named CHECK), nginx enabled and running, then a graceful
    reload (named RELOAD) that returns once the new site serves; each only when something changed."""
    server.shell(name=check, commands=["nginx -t -q"], _if=any_changed(*changes))
    running_and_enabled("nginx.service", "nginx.service enabled and running")
    server.shell(
        name=f"{reload} (graceful: open streams finish)",
        commands=[script_command("gateway/reload-nginx.sh")],
        _if=any_changed(*changes),
    )


def remove_default_site():  # type: ignore[no-untyped-def]
    """Debian's default site answers on port 80 without a key: remove it (a link, or a plain file).

    Before nginx is installed the link does not exist yet, but the install is about to make it."""
    name = "No default nginx site (it would answer without a key)"
    if host.get_fact(Link, path=str(NGINX_DEFAULT_SITE)):
        return files.link(name=name, path=str(NGINX_DEFAULT_SITE), present=False)
    if not host.get_fact(Directory, path=str(NGINX_DIR)):
        return server.shell(name=name, commands=[f"rm -f {NGINX_DEFAULT_SITE}"])
    return files.file(name=name, path=str(NGINX_DEFAULT_SITE), present=False)


def acme_bootstrap(
    gw: GatewaySpec, cert: PurePosixPath = GATEWAY_TLS_CERT, key: PurePosixPath = GATEWAY_TLS_KEY
) -> list:
    """Before certbot's first certificate exists, point CERT and KEY (the gateway's, or a fleet endpoint's) at a
    short-lived self-signed one, so nginx can start and serve the http-01 challenge on port 80
    (templates/gateway/acme-bootstrap.sh)."""
    live = f"{LETSENCRYPT_LIVE}/{gw.domain}"
    linked = host.get_fact(FileText, path=f"{live}/fullchain.pem") is not None
    present = host.get_fact(FileText, path=str(cert)) is not None
    if linked and present:
        return []
    command = script_command(
        "gateway/acme-bootstrap.sh",
        str(gw.domain),
        live,
        str(cert),
        str(key),
        str(ACME_WEBROOT),
    )
    return [
        server.shell(name="TLS bootstrap for ACME (self-signed until certbot's certificate exists)", commands=[command])
    ]


def certbot_args(gw: GatewaySpec) -> list[str]:
    """certbot's http-01 webroot issuance; its renewal (certbot.timer) reloads nginx by the deploy hook."""
    return [
        "certbot",
        "certonly",
        "--non-interactive",
        "--agree-tos",
        "--webroot",
        "-w",
        str(ACME_WEBROOT),
        "-d",
        str(gw.domain),
        "-m",
        str(gw.acme_email),
        "--server",
        gw.acme_server,
        "--deploy-hook",
        "systemctl reload nginx",
        "--keep-until-expiring",
    ]


def acme_certificate(
    gw: GatewaySpec, cert: PurePosixPath = GATEWAY_TLS_CERT, key: PurePosixPath = GATEWAY_TLS_KEY
) -> None:
    """Get the certificate when it is missing, then point CERT and KEY (the gateway's, or a fleet endpoint's)
    at it and reload (templates/gateway/acme-certificate.sh)."""
    live = f"{LETSENCRYPT_LIVE}/{gw.domain}"
    if host.get_fact(FileText, path=f"{live}/fullchain.pem") is not None:
        return
    command = script_command(
        "gateway/acme-certificate.sh",
        live,
        str(cert),
        str(key),
        gw.acme_ca_bundle or "",
        *certbot_args(gw),
    )
    server.shell(name=f"ACME certificate for {gw.domain} (certbot, http-01)", commands=[command])
