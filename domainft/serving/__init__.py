"""Serving: OpenAI-compatible HTTP API (app, schemas), batching engine (engine, decoding),
model resolution for folders / MLflow URIs / base + adapter (loader), vLLM export (export),
and the CLI adapters (commands)."""
