"""pyinfra deploys for gpuctl, one module per concern. Each reads the host's spec, compares it with
the host's facts and changes only what differs. `deploy.host.deploy_host` runs them in order."""
