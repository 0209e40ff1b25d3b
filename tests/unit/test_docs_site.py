"""scripts/docs_site.py and scripts/mkdocs_hooks.py: the site's generated pages follow the code."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from types import SimpleNamespace

import pytest
from helpers import REPO

from lowres import schema

sys.path.insert(0, str(REPO / "scripts"))
docs_site = pytest.importorskip("docs_site")


@dataclasses.dataclass
class TrainerWithANewKey(schema.TrainerConfig):
    # Added by this test: the reference must show it
    new_knob: int = 7  # without anyone editing a page


def test_a_new_config_key_and_option_appear_in_the_reference_without_hand_edits(tmp_path):
    configs = tmp_path / "configs"
    shutil.copytree(schema.config_dir(), configs)
    (configs / "trainer" / "knobbed.yaml").write_text(
        "# lowres train +task=xquad trainer=knobbed\n"
        "# A trainer option added by the test.\n"
        "defaults:\n  - trainer_schema\n"
        "new_knob: 9        # turned up\n"
    )
    groups = {**schema.GROUP_SCHEMAS, "trainer": TrainerWithANewKey}
    page = docs_site.config_reference(groups, {}, configs, "lowres/schema.py")
    row = (
        "| `trainer.new_knob` | `int` | `7` | Added by this test: the reference must show it "
        "without anyone editing a page |"
    )
    assert row in page
    assert "### `trainer=knobbed`" in page
    assert "| `new_knob` | `9` | turned up |" in page
    assert "lowres train +task=xquad trainer=knobbed" in page
    # and not in the reference of the real schema
    assert "new_knob" not in docs_site.lowres_config_reference()


def test_the_reference_lists_every_schema_key_and_every_yaml_option():
    page = docs_site.lowres_config_reference()
    for group, cls in {**schema.GROUP_SCHEMAS, "sweep": schema.SweepConfig}.items():
        for item in dataclasses.fields(cls):
            assert f"| `{group}.{item.name}` |" in page, f"{group}.{item.name}"
    for path in sorted(schema.config_dir().rglob("*.yaml")):
        group = path.parent.relative_to(schema.config_dir()).as_posix()
        if group == ".":
            assert f"## `{path.name}`" in page
        elif group.split("/")[0] in {**schema.GROUP_SCHEMAS, "sweep": 0}:
            assert f"### `{group}={path.stem}`" in page, path
        else:
            option = path.relative_to(schema.config_dir() / group.split("/")[0])
            assert f"### `{group.split('/')[0]}/{option.with_suffix('').as_posix()}`" in page
    # values and comments come from the YAML file itself
    assert "| `lr` | `0.01` | prompt learning rate; the head uses trainer.lr |" in page
    assert "| `trainer.seed` | `int` | `42` |" in page


def test_yaml_option_reads_nested_keys_comments_and_the_defaults_list(tmp_path):
    option = tmp_path / "opt.yaml"
    option.write_text(
        "# @package _global_\n# lowres train +method=x\n# What it is.\n"
        "defaults:\n  - deep_prompt   # the base\n  - override /adapter: lora\n"
        "trainer:\n  lr: 1.0e-3   # the rate\n"
        'template: "a # not a comment"  # but this is\n'
    )
    header, defaults, keys = docs_site.yaml_option(option)
    assert header == ["lowres train +method=x", "What it is."]
    assert [(d.name, d.comment) for d in defaults] == [
        ("deep_prompt", "the base"),
        ("override /adapter: lora", ""),
    ]
    assert [(k.name, k.value, k.comment) for k in keys] == [
        ("trainer.lr", "1.0e-3", "the rate"),
        ("template", '"a # not a comment"', "but this is"),
    ]


def test_the_layer_diagram_draws_every_layer_of_the_import_linter_contract():
    diagram = docs_site.layer_diagram(REPO / "pyproject.toml")
    rows = [line for line in diagram.splitlines() if line.strip().startswith("| lowres")]
    assert rows[0].strip() == "| lowres.cli |"
    assert rows[1].strip() == "| lowres.commandline |"
    assert rows[-1].strip() == "| lowres.errors |"
    assert any("lowres.tasks   lowres.methods" in row for row in rows)
    assert [row.strip() for row in rows[3:6]] == [
        "| lowres.recipes |",
        "| lowres.assembly |",
        "| lowres.builders |",
    ]
    assert len(rows) == 15


def test_the_hook_points_repository_links_to_the_sites_copy_of_results():
    pytest.importorskip("mkdocs")
    hooks = pytest.importorskip("mkdocs_hooks")
    page = SimpleNamespace(file=SimpleNamespace(src_uri="results/study_me5.md"))
    markdown = "![a](../../results/study_me5/main_xquad.png) [b](../results/x.md) <!-- layers -->"
    out = hooks.on_page_markdown(markdown, page, {}, None)
    assert out.startswith("![a](../results/study_me5/main_xquad.png) [b](../results/x.md)")
    assert "| lowres.cli |" in out


def test_readme_fits_a_screen_gives_cis_test_command_and_links_the_architecture():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    test_command = next(line for line in ci if line.startswith("python -m pytest"))
    assert test_command == "python -m pytest -q"
    assert f"&& {test_command}\n```" in readme  # the README's setup line ends with it
    assert "](docs/development/architecture.md)" in readme
    for link in ("docs/getting-started.md", "docs/results/study_me5.md", "docs/reliability.md"):
        assert f"]({link})" in readme and (REPO / link).is_file()
