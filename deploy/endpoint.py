"""A fleet endpoint on its front host (gpuctl.endpoints): nginx's site, keys, certificate and the hosts' CA,
checked with `nginx -t` and reloaded gracefully on change (open streams finish on the old workers)."""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import server

from gpuctl.deploy.facts import ExistingPaths
from gpuctl.deploy.files import put_rendered
from gpuctl.deploy.gateway import acme_bootstrap, acme_certificate, check_and_reload, remove_default_site
from gpuctl.deploy.packages import apt_installed
from gpuctl.deploy.scripts import script_command
from gpuctl.host_layout import endpoint_dir, endpoint_site, endpoint_tls
from gpuctl.render import EndpointFiles
from gpuctl.spec import EndpointSpec, HostSpec


@deploy("Fleet endpoint (nginx)")
def endpoint(spec: EndpointSpec, rendered: EndpointFiles) -> None:
    """Install nginx, put the endpoint's files, check them with `nginx -t`, then reload on change. With ACME,
    as a gateway's: a bootstrap certificate first, then certbot's over http-01."""
    acme = spec.tls == "acme"
    apt_installed("nginx" + (" and certbot" if acme else ""), ["nginx", *(["certbot"] if acme else [])])
    changes = [remove_default_site()]
    if acme:
        changes += acme_bootstrap(spec.listener(), *endpoint_tls(spec.name))
    changes += [put_rendered(item) for item in rendered.all()]
    check_and_reload(changes, f"nginx -t (endpoint {spec.name})", f"Reload nginx for endpoint {spec.name}")
    if acme:
        acme_certificate(spec.listener(), *endpoint_tls(spec.name))


def stale_endpoints(spec: HostSpec) -> None:
    """Remove the sites and keys of fleet endpoints this host no longer fronts (one removed from the inventory,
    renamed or moved to another front), so they stop answering with their keys; then reload nginx."""
    wanted = {str(endpoint_site(e.name)) for e in spec.endpoints} | {str(endpoint_dir(e.name)) for e in spec.endpoints}
    globs = (str(endpoint_site("*")), f"{endpoint_dir('*')}")
    stale = [p for p in host.get_fact(ExistingPaths, globs=globs) or [] if p not in wanted]
    if not stale:
        host.noop("no stale fleet endpoint")
        return
    quoted = " ".join(shlex.quote(p) for p in stale)
    server.shell(
        name=f"Remove fleet endpoints no longer in the inventory ({', '.join(sorted(stale))})",
        commands=[f"rm -rf {quoted} && nginx -t -q && {script_command('gateway/reload-nginx.sh')}"],
    )
