"""Fleet endpoints: one https://DOMAIN/v1 on a front host for the hosts that serve one model.

The front runs nginx (the distribution's, as the gateway does): an upstream of the hosts' gateways with
`least_conn` and passive health (`max_fails=1 fail_timeout=…`: a host whose connection failed is left out
for a while, then tried again with live traffic, so a host that comes back rejoins by itself). A request
whose connection failed never reached a host and is sent to the next one (`proxy_next_upstream error
timeout`); nginx never retries a POST that a host received, so a stream that breaks fails and is never
duplicated. Streaming is unbuffered. `/v1/models` answers the endpoint's model.

Keys: clients send the endpoint's own key; the front sends the hosts one internal key of the endpoint
(`endpoint.NAME.upstream`), which their gateways accept besides their own. Trust: every host's
private-CA gateway certificate also names `gpuctl-endpoint-NAME`, which the front checks.

Why nginx and not a model-aware router (vLLM production-stack's router, LiteLLM's proxy): every host
behind an endpoint serves the same model, so there is nothing to route by model; nginx is already on
every host with a gateway, runs as root to read 0600 keys, and reloads without dropping streams.
"""

from __future__ import annotations

from gpuctl.spec import EndpointSpec, HostSpec, bracketed

UPSTREAM_KEY_SUFFIX = ".upstream"


def key_name(endpoint: EndpointSpec) -> str:
    """The keystore name of the key clients send (file endpoint.NAME.api-key beside the inventory)."""
    return f"endpoint.{endpoint.name}"


def upstream_key_name(endpoint: EndpointSpec) -> str:
    """The keystore name of the key the front sends the hosts (never given to clients)."""
    return key_name(endpoint) + UPSTREAM_KEY_SUFFIX


def apply(hosts: dict[str, HostSpec], endpoints: list[EndpointSpec], label: str) -> list[str]:
    """Check each endpoint against the inventory's hosts and wire it into its front and its hosts."""
    problems: list[str] = []
    names: set[str] = set()
    for endpoint in endpoints:
        where = f"{label}: endpoint {endpoint.name}"
        if endpoint.name in names:
            problems.append(f"{where}: defined twice (give each Endpoint its own name)")
            continue
        names.add(endpoint.name)
        found = [f"{where}: {p}" for p in problems_of(endpoint, hosts)]
        problems += found
        if not found:
            front = hosts[endpoint.on]
            front._endpoints.append(endpoint)
            front._endpoint_members[endpoint.name] = {n: gateway_address(hosts[n]) for n in endpoint.hosts}
            for name in endpoint.hosts:
                hosts[name]._behind_endpoints.append(endpoint)
    return problems


def gateway_address(host: HostSpec) -> str:
    """ADDRESS:PORT where the front reaches HOST's gateway."""
    assert host.gateway is not None and host.address is not None
    return f"{bracketed(host.address)}:{host.gateway.port}"


def problems_of(endpoint: EndpointSpec, hosts: dict[str, HostSpec]) -> list[str]:
    """What stops ENDPOINT from working with these hosts, one line each."""
    known = ", ".join(hosts)
    unknown = [n for n in [endpoint.on, *endpoint.hosts] if n not in hosts]
    if unknown:
        return [f"{unknown[0]!r} is not a host of the inventory (hosts: {known})"]
    if endpoint.tls == "acme" and endpoint.port != 443:
        return [f"port: ACME (tls='acme') certificates are for port 443, not {endpoint.port}"]
    problems = [p for name in endpoint.hosts if (p := member_problem(endpoint, hosts[name]))]
    front = hosts[endpoint.on]
    if front.address is None:
        problems.append(f"on: {front.name} has no address for clients to reach (local=True)")
    if front.install == "user":
        problems.append(f'on: {front.name} is a user-level install (install="user"): nginx needs root')
    taken = {front.ssh_port: "ssh"}
    if front.gateway is not None:
        taken[front.gateway.port] = "its gateway"
        taken |= {80: "its gateway's ACME"} if front.gateway.tls == "acme" else {}
    taken |= {e.port: e.label for e in front.engines()}
    for other in front.endpoints:  # those wired before this one
        taken[other.port] = f"endpoint {other.name}"
        taken |= {80: f"endpoint {other.name}'s ACME"} if other.tls == "acme" else {}
    if endpoint.port in taken:
        problems.append(f"port: {endpoint.port} is taken on {front.name} by {taken[endpoint.port]}")
    return problems


def member_problem(endpoint: EndpointSpec, host: HostSpec) -> str | None:
    """Why HOST cannot serve behind ENDPOINT, or None."""
    from gpuctl.client_env import (
        names_of,
        serves,
    )  # client_env reaches engines through gpuctl.access, which imports this

    if host.address is None:
        return f"hosts: {host.name} has no address the front can reach (local=True)"
    if host.gateway is None:
        return f"hosts: {host.name} has no gateway (the front reaches each host through its gateway)"
    if host.gateway.tls != "private-ca":
        return (
            f"hosts: {host.name}'s gateway uses tls={host.gateway.tls!r}: the front checks the hosts' certificates "
            "by gpuctl's private CA, so behind an endpoint a gateway keeps tls='private-ca'"
        )
    engine = host.gateway_default_engine()
    if engine is None or not serves(engine, endpoint.model):
        served = ", ".join(names_of(engine)) if engine else "nothing"
        return f"hosts: {host.name}'s gateway /v1 does not serve {endpoint.model!r} (it serves {served})"
    return None
