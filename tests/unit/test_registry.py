"""The registries: built-in names, a user's import path, an installed package's entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowres import registry
from lowres.errors import ConfigError
from lowres.metrics import load_metric
from lowres.registry import ADAPTERS, ALIGNMENT_LOSSES, FREEZING_STRATEGIES, METRICS, Registry
from lowres.schema import config_dir

ALL = [v for v in vars(registry).values() if isinstance(v, Registry)]


@pytest.mark.parametrize("kind", ALL, ids=lambda r: r.group)
def test_every_built_in_entry_loads(kind: Registry) -> None:
    for name in kind.builtins:
        assert kind.load(name) is not None
        kind.check(name)


@pytest.mark.parametrize(
    ("kind", "folder", "key"),
    [(ALIGNMENT_LOSSES, "align", "kind"), (FREEZING_STRATEGIES, "freeze", "strategy")],
)
def test_every_built_in_name_has_its_yaml_option(kind: Registry, folder: str, key: str) -> None:
    for name in kind.builtins:
        text = (config_dir() / folder / f"{name}.yaml").read_text()
        assert f"{key}: {name}" in text


def test_adapter_options_name_registered_adapters() -> None:
    for path in (config_dir() / "adapter").glob("*.yaml"):
        kind = next(line.split(":")[1].split()[0] for line in path.read_text().splitlines()
                    if line.startswith("kind:"))  # fmt: skip
        assert kind in ADAPTERS.builtins, path


def test_an_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="align.kind='msee' is not a known choice") as error:
        ALIGNMENT_LOSSES.load("msee")
    assert "mse, cosine, contrastive, kl" in str(error.value)
    assert "module:attribute" in str(error.value)


def test_an_import_path_is_a_name(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "regtest_metric.py").write_text(
        "class Exact:\n"
        "    def compute(self, predictions, references):\n"
        "        hits = sum(p == r for p, r in zip(predictions, references))\n"
        "        return {'exact': 100.0 * hits / len(references)}\n"
        "EXACT = Exact()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "regtest_metric:EXACT" in METRICS
    metric = load_metric("regtest_metric:EXACT")
    assert metric.compute(predictions=[1, 2], references=[1, 3]) == {"exact": 50.0}
    with pytest.raises(ConfigError, match="cannot be imported"):
        METRICS.check("regtest_metric:MISSING")


def install_align_entry(tmp_path: Path, monkeypatch, module: str, name: str, source: str):
    """What ``pip install`` of a package with ``[project.entry-points."lowres.align"]`` leaves."""
    (tmp_path / f"{module}.py").write_text(source)
    info = tmp_path / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[lowres.align]\n{name} = {module}:{name}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_an_entry_point_adds_a_name(tmp_path: Path, monkeypatch) -> None:
    """What ``pip install`` of a package with ``[project.entry-points."lowres.align"]`` leaves."""
    source = "def absolute(source, target):\n    return (source - target).abs().mean()\n"
    install_align_entry(tmp_path, monkeypatch, "regtest_loss", "absolute", source)
    assert "absolute" in ALIGNMENT_LOSSES.names()
    import torch

    from lowres.losses.alignment import alignment_loss

    value = alignment_loss("absolute", torch.zeros(2, 3), torch.ones(2, 3), temperature=0.1)
    assert value.item() == 1.0


def test_a_built_in_entry_declares_its_traits_in_the_registry(monkeypatch) -> None:
    """kl compares logits, the others pooled hidden states, read without importing them."""

    def no_import(name: str) -> None:
        raise AssertionError(f"{name} was imported to read a trait")

    monkeypatch.setattr(Registry, "load", lambda self, name: no_import(name))
    compares = {
        name: ALIGNMENT_LOSSES.trait(name, "compares") for name in ALIGNMENT_LOSSES.builtins
    }
    assert compares == {
        "mse": "hidden_states",
        "cosine": "hidden_states",
        "contrastive": "hidden_states",
        "kl": "logits",
    }


def test_an_installed_entry_declares_its_traits_as_attributes(tmp_path: Path, monkeypatch) -> None:
    source = (
        "def agree(source, target):\n    return (source - target).abs().mean()\n\n\n"
        "agree.compares = 'logits'\n"
    )
    install_align_entry(tmp_path, monkeypatch, "regtest_logits", "agree", source)
    assert ALIGNMENT_LOSSES.trait("agree", "compares") == "logits"
    assert ALIGNMENT_LOSSES.trait("regtest_logits:agree", "compares") == "logits"
