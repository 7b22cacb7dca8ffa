"""The values file for vLLM's production-stack Helm chart (gpuctl.production_stack): valid against the chart's
own values.schema.json (tests/data/production-stack, JSON Schema 2020-12, validated with jsonschema), every key
one the chart knows (its schema allows unknown ones, which it would ignore), and the command line the chart
builds from it the same as the compose file's (`VllmSpec.command_args`)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from gpuctl import inventory, production_stack
from gpuctl.spec import CONTAINER_PORT
from harness.cli import REPO, run_cli

SCHEMA = json.loads((Path(__file__).parents[1] / "data" / "production-stack" / "values.schema.json").read_text())
MODEL_SPEC = SCHEMA["properties"]["servingEngineSpec"]["properties"]["modelSpec"]["items"]["properties"]


def chart_command(spec: dict) -> list[str]:
    """The arguments the chart's deployment template writes for SPEC (helm/templates/deployment-vllm-multi.yaml
    at the commit in tests/data/production-stack/README.md): model, host, port, the prefix-caching switch,
    then extraArgs."""
    config = spec["vllmConfig"]
    switch = "--enable-prefix-caching" if config["enablePrefixCaching"] else "--no-enable-prefix-caching"
    return [spec["modelURL"], "--host", "0.0.0.0", "--port", str(CONTAINER_PORT), switch, *config["extraArgs"]]


def options(args: list[str]) -> tuple[str, list[tuple[str, str | None]]]:
    """(positional model, each flag with its value or None) in a comparable order."""
    pairs: list[tuple[str, str | None]] = []
    for i, arg in enumerate(args[1:], start=1):
        if arg.startswith("--"):
            following = args[i + 1] if i + 1 < len(args) else None
            pairs.append((arg, None if following is None or following.startswith("--") else following))
    return args[0], sorted(pairs, key=lambda p: (p[0], p[1] or ""))


@pytest.mark.parametrize("example", ["prod", "cpu-server"])
def test_the_values_are_valid_for_the_chart_and_run_the_compose_command_line(example):
    hosts = list(inventory.load(f"example:{example}").hosts.values())
    data, left_out = production_stack.values(hosts)
    assert left_out == []
    jsonschema.validate(data, SCHEMA, cls=jsonschema.Draft202012Validator)
    engines = [(h, e) for h in hosts for e in h.vllm]
    specs = data["servingEngineSpec"]["modelSpec"]
    assert len(specs) == len(engines)
    for spec, (_, engine) in zip(specs, engines, strict=True):
        assert set(spec) <= set(MODEL_SPEC), set(spec) - set(MODEL_SPEC)
        assert set(spec["vllmConfig"]) <= set(MODEL_SPEC["vllmConfig"]["properties"])
        assert f"{spec['repository']}:{spec['tag']}" == engine.image
        assert options(chart_command(spec)) == options(engine.command_args())


def test_an_image_pinned_by_digest_is_left_out_with_why(tmp_path):
    path = tmp_path / "digest.py"
    path.write_text(
        "from gpuctl.inventory import Host, Vllm\n"
        'cpu = [Host("c1", address="192.0.2.5", vllm=Vllm(image="vllm/vllm-openai@sha256:' + "a" * 64 + '", '
        'model="org/m", device="cpu"))]\n'
    )
    data, left_out = production_stack.values(list(inventory.load(str(path)).hosts.values()))
    assert data["servingEngineSpec"]["modelSpec"] == []
    assert left_out == ["c1 vllm:main: pinned by digest; the chart takes repository:tag"]


def test_render_kubernetes_writes_the_values_file_beside_the_manifests(tmp_path):
    result = run_cli("render", "example:prod", "--target", "kubernetes", "--out", str(tmp_path), "--json", cwd=REPO)
    assert result.exit_code == 0, result.stderr
    written = Path(json.loads(result.stdout)["production_stack_values"])
    assert written == tmp_path / "production-stack-values.yaml"
    text = written.read_text()
    assert text.startswith("# gpuctl: values for vLLM's production-stack chart (vllm-stack 0.1.12)")
    assert yaml.safe_load(text)["servingEngineSpec"]["modelSpec"][0]["name"] == "vllm-gpu-01-main"
    assert "sk-" not in text  # secrets by reference only
