"""The catalog: projects, keys and policies (its own data), and the session and block index
(derived from blob footers; ``replay reindex`` rebuilds it)."""

from replay.catalog.records import ApiKey, BlockRow, Project, SessionSummary
from replay.catalog.sqlite import SqliteCatalog, open_catalog

__all__ = ["ApiKey", "BlockRow", "Project", "SessionSummary", "SqliteCatalog", "open_catalog"]
