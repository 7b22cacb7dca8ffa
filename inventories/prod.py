"""Production: two RTX 4090 boxes serving Llama 3.1 8B, one 2×H100 box serving a 70B model.

Every module-level list is a group; `<group>_defaults` apply to its hosts, `defaults` to all.
Secrets are references: export VLLM_API_KEY and HF_TOKEN (or point at files) before deploying.

Engines listen on loopback only. Clients reach them through each host's gateway, https://HOST/v1,
with the bearer key gpuctl generates (inventories/.gpuctl/prod/HOST.api-key) and, for the private CA,
inventories/.gpuctl/prod/ca.pem to trust. The firewall leaves only SSH and 443 open.
"""

from gpuctl.inventory import Defaults, Driver, Gateway, Gpu, Host, Model, Secret, Vllm

VLLM_IMAGE = "vllm/vllm-openai:v0.32.0"
# One name on every engine: vLLM serves these weights as llama-3.1-8b here, and a laptop's Ollama names its
# GGUF build the same (inventories/dev-laptop.py), so `gpuctl env prod` and `gpuctl env dev-laptop` switch
# an application without a code change.
LLAMA_8B = Model("llama-3.1-8b", vllm="meta-llama/Llama-3.1-8B-Instruct", ollama="llama3.1:8b")

defaults = Defaults(
    ssh_user="root",
    driver=Driver(branch=580, server=True, open_kernel_modules=True, allow_reboot=False),
    gateway=Gateway(tls="private-ca", metrics_allow=["198.51.100.7"]),  # Prometheus reads /metrics without the key
)

rtx4090 = [
    Host("gpu-01", address="203.0.113.11"),
    Host("gpu-02", address="203.0.113.12", vllm=Vllm(gpu_memory_utilization=0.88)),
]
rtx4090_defaults = Defaults(
    gpus=Gpu(model="RTX 4090", count=1, memory_gib=24),
    vllm=Vllm(
        image=VLLM_IMAGE,
        model=LLAMA_8B,
        port=8000,
        gpu_memory_utilization=0.90,
        max_model_len=16384,
        kv_cache_dtype="fp8",
        enable_chunked_prefill=True,
        enable_prefix_caching=True,
        max_num_seqs=64,
        api_key=Secret.env("VLLM_API_KEY"),
        hf_token=Secret.env("HF_TOKEN"),
    ),
)

h100 = [
    Host(
        "gpu-h100-01",
        address="203.0.113.21",
        gateway=Gateway(tls="acme", domain="llm.example.com", acme_email="ops@example.com"),
    ),
]
h100_defaults = Defaults(
    gpus=Gpu(model="H100 80GB", count=2, memory_gib=80),
    vllm=Vllm(
        image=VLLM_IMAGE,
        model="RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic",
        served_model_name="llama-3.3-70b",
        tensor_parallel_size=2,
        gpus=[0, 1],
        gpu_memory_utilization=0.92,
        max_model_len=32768,
        kv_cache_dtype="fp8",
        max_num_seqs=128,
        api_key=Secret.env("VLLM_API_KEY"),
        hf_token=Secret.env("HF_TOKEN"),
    ),
)
