"""The `de` group and the options its commands share (catalog, query timeout).

Command modules (dataengine.cli, dataengine.cli_caption) register on `main` and import only this
module, so no two command modules import each other; `dataengine.cli` imports the others to
assemble the command line.
"""

from __future__ import annotations

import click

from .options import Float

CATALOG_HELP = "Catalog file (default: $DE_CATALOG, else ./catalog.duckdb)."


def query_timeout_option(f):
    return click.option("--query-timeout", type=Float(0.1, 86400), default=30.0, show_default=True,
                        help="Seconds a --query may run before it is stopped.")(f)


def catalog_option(f):
    return click.option("--catalog", "catalog_path", type=click.Path(dir_okay=False), default=None,
                        help=CATALOG_HELP)(f)


class CatalogGroup(click.Group):
    """`de`: a DuckDB error that escapes a command (a catalog cut short, zeroed, or not DuckDB's) is
    one line naming the catalog, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as e:
            if not type(e).__module__.startswith(("duckdb", "_duckdb")):
                raise
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise click.ClickException(f"cannot read the catalog: {first} (the file may be damaged: restore it from a "
                                       "copy, or rebuild it with `de ingest`)") from e


@click.group(cls=CatalogGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="cartoon-dataengine")
@click.option("--catalog", "group_catalog", type=click.Path(dir_okay=False), default=None,
              help=CATALOG_HELP + " Given here, it applies to the command (`de --catalog X ingest ...`); a "
                   "command's own --catalog wins.")
def main(group_catalog) -> None:
    """Cartoon data engine: scene-split raw videos into a DuckDB catalog, label clips with a VLM,
    and query them with SQL.

    \b
    Typical session:
      de ingest raw_videos/
      de caption --model qwen2-vl
      de query "tags LIKE '%chase%' AND duration_s > 3"
      de stats
    """
    if group_catalog:
        import os

        os.environ["DE_CATALOG"] = group_catalog  # every command's --catalog defaults to $DE_CATALOG
