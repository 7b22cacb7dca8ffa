"""A tiny Llama chat model made locally (no model hub): ~0.5 MB, random weights from a fixed seed.

Two halves:
* ``ensure_tiny_model()`` runs on the host Python: it caches the model under the test cache,
  keyed by a hash of this file and of the engine venv, building it atomically (temp dir + rename).
* ``build()`` runs inside the engine venv (it needs torch, transformers and tokenizers):
  ``<venv>/bin/python tests/harness/tiny_model.py --out DIR``.

Architecture (also written to ``gpuctl-model.json`` in the model dir, see ``ARCH``): 2 layers,
hidden 64, 2 attention heads of head_dim 32 (CPU attention needs head_dim >= 32) and **1 KV head**.
One KV head (grouped-query attention, 2 query heads share it) is chosen on purpose: a capacity
planner that wrongly used the attention-head count instead of the KV-head count would be off by 2x
and the cross-check against vLLM's reported KV cache catches it. KV bytes per token =
2 x layers x kv_heads x head_dim x bytes = 2 x 2 x 1 x 32 x 4 = 512 bytes (float32).

Output stays printable ASCII, even at temperature 1: hidden dimension 0 is a constant "bias"
channel (1.0 in every embedding, never written by any layer), and the output-projection (lm_head)
rows of every token that doesn't decode to printable ASCII (control bytes, partial UTF-8, specials
including EOS) are zero except a large negative weight on that channel. Those tokens get logits
around -60, so generation always runs to max_tokens with printable text.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SEED = 1234
FACTS_FILE = "gpuctl-model.json"
ARCH: dict[str, Any] = {
    "architecture": "LlamaForCausalLM",
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,
    "max_position_embeddings": 2048,
    "dtype": "float32",
    "dtype_bytes": 4,
    "target_vocab_size": 512,
}
SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TRAINING_TEXT = """\
The quick brown fox jumps over the lazy dog. A tiny model answers every question with random words.
gpuctl deploys inference endpoints and verifies them: health, version, models, chat and metrics.
Servers start, load weights, allocate the key value cache, and then answer requests one token at a time.
Hello! How are you today? I am fine, thank you. What is the capital of France? Paris is the capital.
Count to ten: one, two, three, four, five, six, seven, eight, nine, ten. Numbers 0123456789 and symbols
like (a + b) * c = d, {"key": "value"}, [1, 2, 3], <tag>, #, $, %, &, @, ~, ^, |, \\, /, ?, !, ;, :.
The engine core schedules batches; the API server streams chunks; the client reads server sent events.
Please write a short poem about graphics cards, memory bandwidth, tensor cores and quiet data centers.
Tokens per second, time to first token, inter token latency, queue depth and cache usage are measured.
"""


def kv_bytes_per_token(arch: dict[str, Any] = ARCH) -> int:
    """2 x layers x kv_heads x head_dim x dtype bytes (the capacity-planner formula)."""
    return 2 * arch["num_hidden_layers"] * arch["num_key_value_heads"] * arch["head_dim"] * arch["dtype_bytes"]


def load_facts(model_dir: Path) -> dict[str, Any]:
    """The architecture numbers recorded next to the weights."""
    return json.loads((Path(model_dir) / FACTS_FILE).read_text())


# --------------------------------------------------------------------------- host side


def model_recipe_hash(venv_key: str) -> str:
    """Hash of this file's source and the venv it is built with (transformers version matters)."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(venv_key.encode())
    return digest.hexdigest()[:12]


def ensure_tiny_model(
    python: Path, cache_root: Path, *, venv_key: str, progress: bool = False, timeout_s: float = 600
) -> Path:
    """Return the cached model dir, building it with the venv's ``python`` when missing."""
    target = cache_root / f"tiny-llama-{model_recipe_hash(venv_key)}"
    if (target / FACTS_FILE).is_file():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    from harness.cache_lock import bounded_lock  # here: this file also runs alone inside the venv

    with bounded_lock(cache_root / f".{target.name}.lock", timeout_s):
        if (target / FACTS_FILE).is_file():
            return target
        staging = cache_root / f".{target.name}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        result = subprocess.run(
            [str(python), __file__, "--out", str(staging)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        if progress:
            print(result.stdout + result.stderr, file=sys.stderr)
        if result.returncode != 0 or not (staging / FACTS_FILE).is_file():
            shutil.rmtree(staging, ignore_errors=True)
            from harness.engine import EngineUnavailable

            raise EngineUnavailable(f"tiny model build failed ({result.returncode}):\n{result.stderr[-4000:]}")
        shutil.rmtree(target, ignore_errors=True)
        os.rename(staging, target)  # atomic: readers see no model or a whole one
    return target


# --------------------------------------------------------------------------- venv side


def is_printable_ascii(text: str) -> bool:
    """True for non-empty text made only of characters 0x20..0x7e."""
    return bool(text) and all(" " <= ch <= "~" for ch in text)


def build_tokenizer() -> Any:
    """A deterministic byte-level BPE tokenizer trained on TRAINING_TEXT, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=ARCH["target_vocab_size"],
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(TRAINING_TEXT.splitlines(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<|end_of_text|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        chat_template=CHAT_TEMPLATE,
        model_max_length=ARCH["max_position_embeddings"],
    )


def banned_token_ids(tokenizer: Any) -> list[int]:
    """Ids that don't decode to printable ASCII on their own (specials included)."""
    vocab_size = len(tokenizer)
    special = set(tokenizer.all_special_ids)
    return [
        i
        for i in range(vocab_size)
        if i in special or not is_printable_ascii(tokenizer.decode([i], skip_special_tokens=False))
    ]


def build_model(tokenizer: Any) -> Any:
    """Random Llama weights from SEED, with the printable-only output trick (module docstring)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=ARCH["hidden_size"],
        intermediate_size=ARCH["intermediate_size"],
        num_hidden_layers=ARCH["num_hidden_layers"],
        num_attention_heads=ARCH["num_attention_heads"],
        num_key_value_heads=ARCH["num_key_value_heads"],
        head_dim=ARCH["head_dim"],
        max_position_embeddings=ARCH["max_position_embeddings"],
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    banned = torch.tensor(banned_token_ids(tokenizer))
    with torch.no_grad():
        embed = model.model.embed_tokens.weight
        embed.normal_(0.0, 0.125)
        embed[:, 0] = 1.0  # constant bias channel
        for layer in model.model.layers:  # no layer writes to the bias channel
            layer.self_attn.o_proj.weight[0, :] = 0.0
            layer.mlp.down_proj.weight[0, :] = 0.0
        head = model.lm_head.weight
        head.normal_(0.0, 0.5)
        head[:, 0] = 0.0
        head[banned, :] = 0.0
        head[banned, 0] = -10.0
    return model


def check_printable(model: Any, tokenizer: Any) -> float:
    """Assert banned tokens lose by a wide margin on random inputs; return the smallest margin."""
    import torch

    banned = banned_token_ids(tokenizer)
    allowed = [i for i in range(len(tokenizer)) if i not in set(banned)]
    generator = torch.Generator().manual_seed(SEED)
    ids = torch.randint(0, len(tokenizer), (4, 64), generator=generator)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    margin = float((logits[..., allowed].min(-1).values - logits[..., banned].max(-1).values).min())
    assert margin > 20, f"banned tokens are too close to allowed ones (margin {margin:.1f})"
    return margin


def build(out: Path) -> dict[str, Any]:
    """Build tokenizer and model into ``out``; returns the recorded facts."""
    import torch
    import transformers

    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    margin = check_printable(model, tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    for path in [out, *out.iterdir()]:  # readable by a non-root engine (e.g. a systemd User=)
        path.chmod(0o755 if path.is_dir() else 0o644)
    facts = {
        **{k: v for k, v in ARCH.items() if k != "target_vocab_size"},
        "vocab_size": len(tokenizer),
        "banned_token_count": len(banned_token_ids(tokenizer)),
        "printable_logit_margin": round(margin, 1),
        "kv_bytes_per_token": kv_bytes_per_token(),
        "seed": SEED,
        "tokenizer_sha256": hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest(),
        "size_bytes": sum(p.stat().st_size for p in out.iterdir() if p.is_file()),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    (out / FACTS_FILE).write_text(json.dumps(facts, indent=2) + "\n")  # written last: the "done" mark
    return facts


def main(argv: list[str] | None = None) -> int:
    """CLI for the venv side: ``--out DIR``."""
    import argparse

    parser = argparse.ArgumentParser(description="build the tiny local chat model")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    started = time.monotonic()
    facts = build(args.out)
    print(json.dumps(facts, indent=2))
    print(f"tiny model built in {time.monotonic() - started:.1f}s at {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
