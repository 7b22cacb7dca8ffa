"""A CPU-only server (Xeon / EPYC, no GPU) serving a small model with vLLM's CPU backend.

The same OpenAI-compatible API as the GPU hosts in prod.py, behind the same gateway: https://HOST/v1.
vLLM's CPU image runs with device="cpu": no GPU reservation and no NVIDIA runtime; the KV cache lives in
host RAM, sized by cpu_kv_cache_gib (VLLM_CPU_KVCACHE_SPACE). `gpuctl plan cpu-server` turns that into
cache tokens and concurrent sequences; the deploy's preflight checks the host's available RAM.
Export VLLM_API_KEY (and HF_TOKEN for gated models) before deploying.
"""

from gpuctl.inventory import Gateway, Host, Secret, Vllm

cpu = [
    Host(
        "cpu-01",
        address="203.0.113.31",
        vllm=Vllm(
            image="public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.32.0",  # see gpuctl/outside.py
            device="cpu",
            model="Qwen/Qwen2.5-0.5B-Instruct",
            served_model_name="qwen2.5-0.5b",
            cpu_kv_cache_gib=8,
            dtype="bfloat16",
            max_model_len=8192,
            max_num_seqs=16,
            api_key=Secret.env("VLLM_API_KEY"),
            hf_token=Secret.env("HF_TOKEN"),
        ),
        gateway=Gateway(tls="private-ca"),
    ),
]
