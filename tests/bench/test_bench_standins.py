"""`gpuctl bench` end to end against the vLLM and Ollama STAND-INS on 127.0.0.1 (real HTTP servers,
real sockets): the table's shape, errors counted, JSON and CSV, hosts from an inventory with their key
and GPU, the published figures beside a matching host, and bad input."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from xml.etree import ElementTree

import pytest
import requests
from cryptography.hazmat.primitives.serialization import Encoding

from gpuctl.bench import client, report
from harness.cli import run_cli
from harness.standin_common import start_ollama, start_vllm

KEY = "bench-secret-4f1c"  # never to appear in any output
SLOW_TOKENS = {"VLLM_STANDIN_FAST": "0", "VLLM_STANDIN_TTFT": "0.004", "VLLM_STANDIN_TOKEN_DELAY": "0.001"}
TABLE_COLUMNS = ["host", "GPU", "engine", "model", "conc.", "aggregate tok/s", "per-stream tok/s", "published", "Δ"]


@pytest.fixture(scope="module")
def vllm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench-vllm")
    standin = start_vllm(
        [
            "serve",
            "meta-llama/Llama-3.1-8B-Instruct",
            "--served-model-name",
            "llama-3.1-8b",
            "--api-key",
            KEY,
            "--disable-uvicorn-access-log",
        ],
        SLOW_TOKENS,
        log_dir=tmp,
    )
    yield standin
    standin.stop()


@pytest.fixture(scope="module")
def ollama(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench-ollama")
    standin = start_ollama(tmp / "models", {"OLLAMA_NUM_PARALLEL": "4"}, log_dir=tmp)
    requests.post(
        f"{standin.base_url}/api/pull", json={"model": "llama3.1:8b", "stream": False}, timeout=10
    ).raise_for_status()
    yield standin
    standin.stop()


def bench_json(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[int, dict, str]:
    kwargs = {"cwd": cwd} if cwd else {}
    result = run_cli("bench", *args, "--json", env=env, **kwargs)
    assert KEY not in result.stdout + result.stderr
    return result.exit_code, json.loads(result.stdout), result.stderr


def test_vllm_url_json_counts_every_token_from_usage(vllm):
    code, data, stderr = bench_json(
        vllm.base_url,
        "--api-key-env",
        "BENCH_KEY",
        "-c",
        "1,4",
        "-n",
        "8",
        "--output-tokens",
        "12",
        env={"BENCH_KEY": KEY},
    )
    assert code == 0, stderr
    run = data["runs"][0]
    assert (run["engine"], run["engine_label"], run["api"], run["model"], run["ok"]) == (
        "vllm",
        "vLLM FP16",
        "openai",
        "llama-3.1-8b",
        True,
    )
    assert run["prompt"]["calibration_error"] is None and run["prompt"]["probes"][-1][1] == 180
    assert [level["concurrency"] for level in run["levels"]] == [1, 4]
    for level in run["levels"]:
        assert (level["requests"], level["errors"]) == (8, 0)
        assert level["output_tokens"] == {"total": 96, "mean": 12.0, "min": 12, "max": 12}
        assert level["prompt_tokens"]["mean"] == 180 and level["stream_events"] == 96
        # The stand-in's delays (TTFT 4 ms, 1 ms per token) show; tokens that arrive in one read count as 0 gaps.
        assert level["ttft_ms"]["p50"] >= 4 and level["itl_ms"]["p99"] >= 0.9 and level["e2e_s"]["p50"] >= 0.015
        assert level["aggregate_tok_s"] == pytest.approx(96 / level["window_s"], rel=1e-2)
        assert level["client_cpu_us_per_token"] > 0
    assert run["levels"][1]["aggregate_tok_s"] > 1.5 * run["levels"][0]["aggregate_tok_s"]  # 4 streams, not 1
    assert "[127.0.0.1:" in stderr and "c=4: done: 8 ok, 0 error(s)" in stderr  # progress on stderr


def test_a_wrong_api_key_fails_the_run_before_any_load(vllm):
    code, data, stderr = bench_json(vllm.base_url, "--api-key-env", "BENCH_KEY", "-c", "2", env={"BENCH_KEY": "wrong"})
    assert code == 1
    [run] = data["runs"]
    assert (
        run["error"]
        == f"{vllm.base_url}/v1/models answers 401: the server rejected the key given: pass --api-key-env VAR"
    )
    assert run["levels"] == [] and "c=2" not in stderr


def test_an_engine_failing_every_request_is_counted_as_errors_and_fails_the_run(tmp_path):
    """The STAND-IN's `dead` fault: /v1/models answers, every generation is a 500."""
    dead = start_vllm(["serve", "org/tiny", "--served-model-name", "tiny"], log_dir=tmp_path)
    try:
        requests.post(f"{dead.base_url}/standin/fault", json={"mode": "dead"}, timeout=5).raise_for_status()
        code, data, _ = bench_json(dead.base_url, "-c", "2,4", "-n", "100")
    finally:
        dead.stop()
    assert code == 1
    run = data["runs"][0]
    assert run["ok"] is False and run["prompt"]["calibration_error"].startswith("HTTP 500")
    assert len(run["levels"]) == 1  # every request of the first level failed: the others are skipped
    level = run["levels"][0]
    # After 10 failures and no success no new request starts (the second worker's last one still counts).
    assert (level["requests"], level["aggregate_tok_s"]) == (0, 0) and level["errors"] in (10, 11)


def header_cells(lines: list[str]) -> list[str]:
    """The table's column titles, joined across the header lines rich may wrap them over."""
    header = lines[
        lines.index(next(line for line in lines if line.startswith("┏"))) + 1 : lines.index(
            next(line for line in lines if line.startswith("┡"))
        )
    ]
    rows = [[c.strip() for c in line.strip().strip("┃").split("┃")] for line in header]
    return [" ".join(part for part in column if part) for column in zip(*rows, strict=False)]


def test_the_table_has_the_published_shape_and_the_csv_one_row_per_level(vllm, tmp_path):
    out = tmp_path / "bench.csv"
    result = run_cli(
        "bench",
        vllm.base_url,
        "--api-key-env",
        "BENCH_KEY",
        "-c",
        "1,2",
        "-n",
        "4",
        "--output-tokens",
        "8",
        "--csv",
        str(out),
        "-q",
        env={"BENCH_KEY": KEY},
    )
    assert result.exit_code == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("gpuctl bench: ~180 tokens in / 8 out, closed loop, streamed")
    cells = header_cells(lines)
    assert cells[: len(TABLE_COLUMNS)] == TABLE_COLUMNS
    assert cells[len(TABLE_COLUMNS) :] == [
        "TTFT ms p50/90/99",
        "ITL ms p50/90/99",
        "E2E s p50/90/99",
        "req/s",
        "tok in/out",
        "ok/err",
    ]
    assert sum(1 for line in lines if "│ vLLM FP16 " in line) == 2
    assert any("client CPU" in line and "µs per output token" in line for line in lines)
    with out.open() as source:
        rows = list(csv.DictReader(source))
    assert list(rows[0]) == report.CSV_COLUMNS
    assert [(r["concurrency"], r["requests"], r["errors"], r["output_tokens_total"]) for r in rows] == [
        ("1", "4", "0", "32"),
        ("2", "4", "0", "32"),
    ]
    assert all(float(r["aggregate_tok_s"]) > 0 and float(r["ttft_ms_p99"]) >= float(r["ttft_ms_p50"]) for r in rows)
    assert rows[0]["reference_aggregate_tok_s"] == ""  # no GPU given: nothing to compare with
    assert KEY not in out.read_text() + result.stdout


def test_ollama_native_api_gives_the_same_table_from_eval_counts(ollama):
    code, data, _ = bench_json(ollama.base_url, "-c", "1,4", "-n", "8", "--output-tokens", "16", "--gpu", "RTX 4090")
    assert code == 0
    run = data["runs"][0]
    assert (run["engine"], run["engine_label"], run["api"], run["model"]) == (
        "ollama",
        "Ollama Q4_K_M",
        "ollama",
        "llama3.1:8b",
    )
    assert run["prompt"]["probes"][-1][1] == 180  # prompt_eval_count, calibrated
    for level in run["levels"]:
        assert level["output_tokens"]["total"] == 8 * 16 and level["stream_events"] == 8 * 16
        assert level["prompt_tokens"]["mean"] == 180
    c1 = run["levels"][0]["reference"]
    assert (c1["gpu"], c1["engine"], c1["aggregate_tok_s"], c1["verdict"]) == (
        "RTX 4090 24GB",
        "Ollama Q4_K_M",
        96,
        "above published",
    )  # a stand-in is no GPU
    assert run["levels"][1]["reference"] is None  # nothing published at concurrency 4


def test_ollama_openai_shim_counts_from_its_usage_chunk(ollama):
    code, data, _ = bench_json(ollama.base_url, "--api", "openai", "-c", "2", "-n", "6", "--output-tokens", "10")
    assert code == 0
    run = data["runs"][0]
    assert (run["engine_label"], run["api"]) == ("Ollama Q4_K_M (/v1)", "openai")
    assert run["levels"][0]["output_tokens"]["total"] == 60 and run["levels"][0]["errors"] == 0


def write_inventory(folder: Path, vllm_port: int, ollama_port: int) -> None:
    (folder / "inventories").mkdir()
    (folder / "inventories" / "lab.py").write_text(
        textwrap.dedent(f"""
        from gpuctl.inventory import Gpu, Host, Ollama, Secret, Vllm
        lab = [
            Host("box", local=True, gpus=Gpu(model="RTX 4090", count=1, memory_gib=24),
                 vllm=Vllm(image="vllm/vllm-openai:v0.32.0", model="meta-llama/Llama-3.1-8B-Instruct",
                           served_model_name="llama-3.1-8b", port={vllm_port}, api_key=Secret.env("BENCH_KEY")),
                 ollama=Ollama(version="0.12.6", port={ollama_port}, models=["llama3.1:8b"])),
        ]
    """)
    )


def test_a_host_is_benched_with_its_spec_key_and_beside_the_published_figures(vllm, ollama, tmp_path):
    write_inventory(tmp_path, vllm.port, ollama.port)
    result = run_cli(
        "bench",
        "box",
        "-c",
        "1",
        "-n",
        "4",
        "--output-tokens",
        "8",
        "-q",
        cwd=tmp_path,
        env={"BENCH_KEY": KEY, "NO_COLOR": "1"},
    )
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("│ box")]
    assert len(rows) == 2
    assert "1× RTX 4090" in rows[0] and "vLLM FP16" in rows[0] and "105 / 105" in rows[0]
    assert "Ollama Q4_K_M" in rows[1] and "96.0 / 96.0" in rows[1]
    assert any(
        line.startswith("box vllm:main c=1: ") and "above the published 105 (RTX 4090 24GB, vLLM FP16)" in line
        for line in result.stdout.splitlines()
    )
    assert "note: these prompts (180 in / 8 out) differ from the published ones (~180 / ~220)" in result.stdout
    assert KEY not in result.output

    code, data, _ = bench_json("lab", "--engine", "ollama", "-c", "1", "-n", "2", "--output-tokens", "4", cwd=tmp_path)
    assert code == 0 and [r["engine"] for r in data["runs"]] == ["ollama"]
    assert data["runs"][0]["gpu"] == "1× RTX 4090"


def test_the_spec_key_missing_from_the_environment_is_bad_input(vllm, ollama, tmp_path):
    write_inventory(tmp_path, vllm.port, ollama.port)
    result = run_cli("bench", "box", cwd=tmp_path, env={"BENCH_KEY": ""})
    assert (result.exit_code, result.stderr) == (2, "error: secret env:BENCH_KEY: environment variable is not set\n")


def test_a_hung_engine_ends_in_timeouts_within_the_bound(vllm):
    requests.post(f"{vllm.base_url}/standin/fault", json={"mode": "hang"}, timeout=5).raise_for_status()
    try:
        endpoint = client.Endpoint(vllm.base_url, "openai", "llama-3.1-8b", KEY, exact_output=True)
        settings = client.Settings(concurrency=[3, 8], requests=6, output_tokens=4, request_timeout_s=0.3)
        result = client.run(endpoint, settings)
    finally:
        requests.post(f"{vllm.base_url}/standin/fault", json={"mode": "none"}, timeout=5).raise_for_status()
    assert result.calibration.error == "timed out after 0.3 s"
    (level,) = result.levels  # nothing succeeded: the second level never ran
    assert (level.requests, level.errors, level.error_kinds) == (0, 6, {"timed out after 0.3 s": 6})
    assert level.window_s < 1.5  # two rounds of three requests, 0.3 s each


def test_duration_stops_new_requests(vllm):
    endpoint = client.Endpoint(vllm.base_url, "openai", "llama-3.1-8b", KEY, exact_output=True)
    settings = client.Settings(concurrency=[2], duration_s=0.25, output_tokens=20, calibrate=False)
    (level,) = client.run(endpoint, settings).levels
    assert level.errors == 0 and level.requests >= 2
    assert 0.25 <= level.window_s < 0.25 + 1.0  # the last requests finish after the deadline, none starts


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--concurrency", "0,x"],
            "error: --concurrency '0,x': give whole numbers from 1 to 4096 separated by commas, e.g. 1,8,32",
        ),
        (["--concurrency", "8,,32"], "error: --concurrency '8,,32': give whole numbers"),
        (["--concurrency", "-1"], "error: --concurrency '-1': give whole numbers"),
        (["--concurrency", "²,4097"], "error: --concurrency '²,4097': give whole numbers"),
        (
            ["--api-key-env", "GPUCTL_UNSET_VAR"],
            "error: --api-key-env GPUCTL_UNSET_VAR: environment variable is not set",
        ),
        (
            ["--csv", "/nonexistent-dir/out.csv"],
            "error: --csv /nonexistent-dir/out.csv: cannot write: No such file or directory",
        ),
        (["--engine", "vllm", "--api", "ollama"], "error: --api ollama: vLLM has no Ollama API (use --api openai)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, expected):
    result = run_cli("bench", "http://127.0.0.1:9", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(expected) and result.stderr.count("\n") == 1 and result.stdout == ""


def test_bad_input_through_the_real_entry_point_has_no_traceback():
    result = subprocess.run(
        [sys.executable, "-c", "from gpuctl.cli import main; main()", "bench", "gpu-01", "-c", "0,x"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "error: --concurrency '0,x': give whole numbers from 1 to 4096 separated by commas, e.g. 1,8,32\n"
    )


def test_a_url_nothing_listens_on_is_a_failed_run():
    result = run_cli("bench", "http://127.0.0.1:9", "-c", "1", "-q")
    assert result.exit_code == 1
    assert "127.0.0.1:9: http://127.0.0.1:9/api/version: no answer (ConnectionError)" in result.stdout


class TlsFront:
    """TLS on 127.0.0.1 in front of a plain HTTP server, bytes piped both ways: the TLS half of a gateway
    (the key is not translated, so the engine behind it takes the gateway's key)."""

    def __init__(self, cert: Path, key: Path, upstream_port: int) -> None:
        import asyncio
        import ssl
        import threading

        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.upstream_port = upstream_port
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self.serve, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(10)

    def serve(self, started) -> None:  # type: ignore[no-untyped-def]
        import asyncio

        async def pipe(reader, writer) -> None:  # type: ignore[no-untyped-def]
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(reader, writer) -> None:  # type: ignore[no-untyped-def]
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        async def main() -> None:
            self.server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=self.context)
            self.port = self.server.sockets[0].getsockname()[1]
            started.set()
            await self.server.serve_forever()

        asyncio.set_event_loop(self.loop)
        with contextlib.suppress(BaseException):  # cancelled at stop()
            self.loop.run_until_complete(main())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(lambda: [t.cancel() for t in __import__("asyncio").all_tasks(self.loop)])
        self.thread.join(10)


def test_a_host_behind_a_gateway_is_benched_over_https_with_the_gateway_key_and_ca(vllm, tmp_path):
    from gpuctl.keystore import Keystore

    (tmp_path / "inventories").mkdir()
    inventory = tmp_path / "inventories" / "edge.py"
    keystore = Keystore.for_inventory(inventory)
    cert = keystore.server_cert("box", ["127.0.0.1"])  # also makes the private CA the inventory's clients trust
    (tmp_path / "cert.pem").write_text(cert.chain_pem)
    (tmp_path / "key.pem").write_text(cert.key_pem)
    front = TlsFront(tmp_path / "cert.pem", tmp_path / "key.pem", vllm.port)
    try:
        inventory.write_text(
            textwrap.dedent(f"""
            from gpuctl.inventory import Gateway, Gpu, Host, Secret, Vllm
            edge = [Host("box", local=True, gpus=Gpu(model="RTX 4090", count=1, memory_gib=24),
                         gateway=Gateway(port={front.port}, api_key=Secret.env("BENCH_KEY")),
                         vllm=Vllm(image="vllm/vllm-openai:v0.32.0", model="meta-llama/Llama-3.1-8B-Instruct",
                                   served_model_name="llama-3.1-8b", port=1, api_key=Secret.env("BENCH_KEY")))]
        """)
        )  # the engine's own port (1) is never used: clients go through the gateway
        code, data, stderr = bench_json(
            "box", "-c", "2", "-n", "4", "--output-tokens", "6", cwd=tmp_path, env={"BENCH_KEY": KEY}
        )
        assert code == 0, stderr
        run = data["runs"][0]
        assert (run["via"], run["url"], run["ok"]) == ("gateway", f"https://127.0.0.1:{front.port}", True)
        assert run["levels"][0]["output_tokens"]["total"] == 24
        assert "[box vllm:main via gateway] c=2: done: 4 ok" in stderr

        # Trusting another CA: every request fails on TLS (and says so); nothing goes out in clear.
        keystore.ca_path.write_text(Keystore(tmp_path / "other-ca").ca()[0].public_bytes(Encoding.PEM).decode())
        code, data, _ = bench_json("box", "-c", "1", "-n", "2", cwd=tmp_path, env={"BENCH_KEY": KEY})
        assert code == 1
        [run] = data["runs"]
        assert "TLS certificate not trusted" in run["error"] and run["levels"] == [], run
    finally:
        front.stop()


@pytest.mark.parametrize("suffix", [".png", ".svg", ".html"])
def test_plot_draws_the_measured_levels_beside_the_published_rows(vllm, tmp_path, suffix):
    """`--plot` against the vLLM STAND-IN with --gpu "RTX 4090": the file is a real PNG / SVG / HTML page
    whose picture carries the measured series and the published ones (matplotlib draws it)."""
    out = tmp_path / f"bench{suffix}"
    result = run_cli(
        "bench",
        vllm.base_url,
        "--api-key-env",
        "BENCH_KEY",
        "--gpu",
        "RTX 4090",
        "-c",
        "1,2,4",
        "-n",
        "4",
        "--output-tokens",
        "8",
        "--plot",
        str(out),
        "-q",
        env={"BENCH_KEY": KEY},
    )
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    if suffix == ".png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
        shutil.copy(out, Path(tempfile.gettempdir()) / "gpuctl-bench-plot.png")  # to look at it
        return
    text = data.decode()
    svg = text if suffix == ".svg" else text[text.index("<svg") : text.index("</svg>") + 6]
    root = ElementTree.fromstring(svg)
    assert root.tag.endswith("svg")
    assert "measured: " in text and "published: RTX 4090 24GB, vLLM FP16" in text  # matplotlib's text comments
    if suffix == ".html":
        assert text.startswith("<!doctype html>") and "<title>gpuctl bench http://127.0.0.1:" in text


@pytest.mark.parametrize(
    ("name", "said"), [("bench.pdf", "give a file ending in .png, .svg, .html"), ("nowhere/b.png", "cannot write")]
)
def test_a_bad_plot_file_is_refused_before_any_request(vllm, tmp_path, name, said):
    result = run_cli("bench", vllm.base_url, "--plot", str(tmp_path / name), "-q")
    assert result.exit_code == 2 and said in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_a_prompt_and_output_that_cannot_fit_the_models_context_are_refused_before_any_load(tmp_path):
    """The vLLM STAND-IN with --max-model-len 256 (its /v1/models says so, and it refuses longer prompts with
    vLLM's 400): the default sizes (180 + 220) are refused up front with one line and a size that fits;
    180 + 32 fits, and the calibration stays within the context."""
    small = start_vllm(["serve", "org/tiny", "--served-model-name", "tiny", "--max-model-len", "256"], log_dir=tmp_path)
    try:
        code, data, stderr = bench_json(small.base_url, "-c", "1", "-n", "2")
        assert code == 1
        [run] = data["runs"]
        assert run["error"] == (
            "tiny has a context of 256 tokens: --prompt-tokens 180 + --output-tokens 220 = 400 does not fit "
            "(e.g. --prompt-tokens 120 --output-tokens 128)"
        )
        assert run["levels"] == [] and "calibrating" not in stderr
        code, data, stderr = bench_json(small.base_url, "-c", "1", "-n", "2", "--output-tokens", "32")
        assert code == 0, stderr
        [run] = data["runs"]
        assert run["prompt"]["calibration_error"] is None and run["prompt"]["probes"][-1][1] == 180
        assert max(tokens for _, tokens in run["prompt"]["probes"]) <= 255
    finally:
        small.stop()
