"""MkDocs hooks (mkdocs.yml: ``hooks:``): the generated pages, and results/ inside the site.

- ``reference/config.md`` and ``reference/commands.md`` are generated at every build from the
  schema, the YAML configs and the CLI (``scripts/docs_site.py``); they are never stored.
- ``<!-- layers -->`` in a page becomes the layer diagram drawn from pyproject.toml.
- The plots and tables under ``results/`` (outside ``docs/``) are added to the site at
  ``results/...``; a page links them by their path in the repository
  (``../../results/study_me5/main_xquad.png`` from ``docs/results/``), which reads right on
  GitHub too, and the link is rewritten to the site's copy here. Only Markdown, PNG and CSV
  files are added: a study's per-run JSON stays out of the site.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).resolve().parent))

import docs_site  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results"
PUBLISHED = (".md", ".png", ".csv")
GENERATED = {
    "reference/config.md": docs_site.lowres_config_reference,
    "reference/commands.md": docs_site.command_reference,
}


def on_files(files, config):
    for uri, make in GENERATED.items():
        files.append(File.generated(config, uri, content=make()))
    for path in sorted(RESULTS.rglob("*")):
        if path.suffix in PUBLISHED and "runs" not in path.relative_to(RESULTS).parts:
            uri = path.relative_to(REPO).as_posix()
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    if "<!-- layers -->" in markdown:
        diagram = docs_site.layer_diagram(REPO / "pyproject.toml")
        markdown = markdown.replace("<!-- layers -->", f"```text\n{diagram}```")
    # From docs/<d levels>/page.md the repository's results/ is d + 1 levels up; in the
    # site it sits beside the docs' top level, d levels up.
    depth = page.file.src_uri.count("/")
    return re.sub(
        r"(\]\(|src=\")" + re.escape("../" * (depth + 1)) + "results/",
        lambda m: m.group(1) + "../" * depth + "results/",
        markdown,
    )
