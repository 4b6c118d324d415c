"""`infotok_cli.ray_data`, the documented import path of the Ray Data integration (docs/API.md): an alias of
`infotok_cli.integrations.ray_data`."""

from .integrations.ray_data import OUTPUT_COLUMNS, TokenizeWorker, tokenize_dataset, tokenize_paths

__all__ = ["OUTPUT_COLUMNS", "TokenizeWorker", "tokenize_dataset", "tokenize_paths"]
