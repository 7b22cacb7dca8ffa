"""Run by the CPU vLLM venv's python (not by pytest): parse command lines with vLLM's own `vllm serve`
argument parser, exactly as the image's entrypoint would, and report errors and warnings as JSON.

stdin: a JSON list of argument lists (what follows `vllm serve`). stdout: one JSON object per list:
{"ok": bool, "error": str | None, "warnings": [str], "model": str | None}. Nothing is started.
Also `--choices`: the release's own quantization methods and KV cache dtypes.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import typing


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def serve_parser():
    from vllm.entrypoints.cli import serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(description="vLLM CLI")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    [command] = serve.cmd_init()
    command.subparser_init(subparsers).set_defaults(dispatch_function=command.cmd)
    return parser, command


def check(parser, command, args: list[str], collect: Collect) -> dict:
    collect.messages.clear()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parsed = parser.parse_args(["serve", *args])
            command.validate(parsed)
    except SystemExit:
        return {
            "ok": False,
            "error": stderr.getvalue().strip().splitlines()[-1:],
            "warnings": collect.messages[:],
            "model": None,
        }
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "warnings": collect.messages[:], "model": None}
    return {"ok": True, "error": None, "warnings": collect.messages[:], "model": getattr(parsed, "model_tag", None)}


def main() -> None:
    if sys.argv[1:] == ["--choices"]:
        from vllm.config.cache import CacheDType
        from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

        print(
            json.dumps(
                {"quantization": sorted(QUANTIZATION_METHODS), "kv_cache_dtype": sorted(typing.get_args(CacheDType))}
            )
        )
        return
    collect = Collect()
    logging.getLogger("vllm").addHandler(collect)
    parser, command = serve_parser()
    results = [check(parser, command, args, collect) for args in json.load(sys.stdin)]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
