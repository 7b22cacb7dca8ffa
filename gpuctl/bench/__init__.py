"""`gpuctl bench`: closed-loop streaming load against vLLM or Ollama, in the published table's shape.

Modules: `stats` (percentiles, per-level aggregation), `prompts` (seeded synthetic prompts),
`streams` (cheap SSE / NDJSON parsing), `client` (the asyncio + aiohttp load generator),
`reference` (the published figures as data), `report` (table, JSON, CSV), `command` (the CLI).
"""
