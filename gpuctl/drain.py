"""Draining hosts from the fleet endpoints they serve behind, while a rolling deploy changes them.

Before a batch is deployed, each endpoint's front marks the batch's hosts `down` in the endpoint's
servers file and reloads nginx: new requests go to the other hosts, open streams finish on the old workers,
which the batch waits for (up to the endpoint's drain_timeout_s). A front that does not run the endpoint yet
(its first deploy is to come) has nothing to drain.
After the batch (deployed, verified, rolled back where it failed) they are marked up again. A batch that
holds every host of an endpoint drains none of them (that would leave the endpoint nothing to answer with).
The file written is the one `gpuctl render` shows for the same draining set (gpuctl.render.endpoint_servers),
so a deploy of the front during the batch writes the same bytes, and the next plain deploy finds it as
rendered.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable, Iterator

from gpuctl.deploy.scripts import script_command
from gpuctl.errors import GpuctlError
from gpuctl.render import Draining, endpoint_servers
from gpuctl.spec import EndpointSpec, HostSpec
from gpuctl.verify.remote import Remote

Say = Callable[[str, str], None]


def drainable(batch: list[HostSpec], hosts: dict[str, HostSpec]) -> list[tuple[HostSpec, EndpointSpec, frozenset[str]]]:
    """(front, endpoint, hosts to mark down) for each endpoint some of BATCH serve behind, when others serve too."""
    names = {h.name for h in batch}
    found = []
    for front in hosts.values():
        for endpoint in front.endpoints:
            down = frozenset(n for n in endpoint.hosts if n in names)
            if down and len(down) < len(endpoint.hosts):
                found.append((front, endpoint, down))
    return found


def set_servers(front: HostSpec, endpoint: EndpointSpec, down: frozenset[str]) -> bool:
    """Write the endpoint's servers file on its front with DOWN marked (the bytes and mode deploy would put),
    check it with nginx -t, reload, and wait (up to drain_timeout_s) for the requests the old workers still
    serve. False when the front does not run the endpoint yet (its first deploy is still to come)."""
    servers = endpoint_servers(front, endpoint, down)
    path = shlex.quote(str(servers.path))
    wait = str(endpoint.drain_timeout_s if down else 0)
    command = (
        f"if [ ! -f {path} ]; then echo gpuctl:not-deployed; exit 0; fi; "
        f"umask 077 && printf %s {shlex.quote(servers.content)} > {path}.gpuctl-new && "
        f"chmod {servers.mode_str} {path}.gpuctl-new && mv {path}.gpuctl-new {path} "
        f"&& nginx -t -q && {script_command('gateway/reload-nginx.sh', wait)}"
    )
    out = Remote(front).run(command, timeout=endpoint.drain_timeout_s + 60)
    if not out.ok:
        raise GpuctlError(f"{front.name}: endpoint {endpoint.name}: {(out.stderr or out.stdout).strip()[-300:]}")
    return "gpuctl:not-deployed" not in out.stdout


@contextlib.contextmanager
def drained(batch: list[HostSpec], hosts: dict[str, HostSpec], say: Say | None = None) -> Iterator[Draining]:
    """Inside the block, BATCH's hosts are down in the fleet endpoints they serve behind; yields them by endpoint
    (what a deploy of a front during the batch renders). A front that cannot be reached stops the batch before
    anything changes (its hosts would meet traffic)."""
    draining: dict[str, frozenset[str]] = {}  # only what was drained: what the finally below puts back
    done = []
    try:
        for front, endpoint, down in drainable(batch, hosts):
            if not set_servers(front, endpoint, down):
                if say is not None:
                    say(front.name, f"endpoint {endpoint.name}: not deployed yet, nothing to drain")
                continue
            done.append((front, endpoint))
            draining[endpoint.name] = down
            if say is not None:
                say(front.name, f"endpoint {endpoint.name}: {', '.join(sorted(down))} drained")
        yield draining
    finally:
        failed = []
        for front, endpoint in done:  # each one, even when another failed
            try:
                set_servers(front, endpoint, frozenset())
            except GpuctlError as exc:
                failed.append(str(exc))
            else:
                if say is not None:
                    say(front.name, f"endpoint {endpoint.name}: every host back")
        if failed:
            raise GpuctlError("could not put drained hosts back: " + "; ".join(failed))
