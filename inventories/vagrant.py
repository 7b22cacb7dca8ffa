"""The VM from the Vagrantfile: rehearse a deploy on a throwaway Ubuntu 24.04 machine.

`vagrant up` first. The VM has no GPU, so it runs Ollama on the CPU, behind the gateway and firewall
as a production host would be. The SSH key is the one Vagrant
generated for the VM; set GPUCTL_VAGRANT_KEY if you use the VirtualBox provider.
"""

import os

from gpuctl.inventory import Gateway, Host, Ollama

VAGRANT_KEY = os.environ.get("GPUCTL_VAGRANT_KEY", ".vagrant/machines/gpuctl/libvirt/private_key")

vagrant = [
    Host(
        "gpuctl-vm",
        address="192.168.121.50",
        ssh_user="vagrant",
        ssh_key=VAGRANT_KEY,
        ssh_strict_host_key_checking="no",
        ollama=Ollama(version="0.40.2", keep_alive="-1", cpu_fallback=True, models=["qwen2.5:0.5b"]),
        gateway=Gateway(),  # https://192.168.121.50/v1 with the generated key; the firewall comes with it
    ),
]
