"""Config loading: schema validation with defaults, registry checks, clear errors."""
from __future__ import annotations

import copy

import pytest
import yaml

from brcd.cli import main
from brcd.config import REPO_ROOT, check_config, load_config, validate_schema
from brcd.errors import ConfigError

TEST_CONFIG = REPO_ROOT / "config" / "test.yaml"


def _config():
    return yaml.safe_load(TEST_CONFIG.read_text())


def _write(tmp_path, config):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("name", ["demo.yaml", "test.yaml"])
def test_shipped_configs_are_valid(name):
    config = load_config(REPO_ROOT / "config" / name)
    assert config["mode"] in ("bank", "online") and config["seeds"]


def test_defaults_filled_in():
    config = _config()
    del config["mode"]
    validate_schema(config)
    assert config["mode"] == "bank" and config["backbones"]["tteacher"]["head_input"] == "pooled"


@pytest.mark.parametrize("mutate,match", [
    (lambda c: c.update(bits=[12]), r"key `bits.0`: 12 is not a multiple of 8"),
    (lambda c: c.update(kd=[]), r"key `kd`: \[\] should be non-empty"),
    (lambda c: c.update(mode="fast"), r"key `mode`: 'fast' is not one of \['bank', 'online'\]"),
    (lambda c: c.update(colour="red"), r"Additional properties are not allowed \('colour'"),
    (lambda c: c["datasets"]["synthetic"].pop("topk"), r"key `datasets.synthetic`: 'topk' is a required property"),
    (lambda c: c.pop("teachers"), r"'teachers' is a required property"),
])
def test_schema_errors_name_the_key(tmp_path, mutate, match):
    config = _config()
    mutate(config)
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, config))


def test_unknown_dataset_lists_allowed_values():
    config = _config()
    config["datasets"]["mnist"] = config["datasets"]["synthetic"]
    with pytest.raises(ConfigError, match=r"unknown value 'mnist' in `datasets`; allowed values: cifar10, coco"):
        check_config(validate_schema(config))


def test_unknown_paradigm_and_alias():
    config = validate_schema(_config())
    bad = copy.deepcopy(config)
    bad["paradigms"] = ["sym", "mixed"]
    with pytest.raises(ConfigError, match=r"unknown value 'mixed' in `paradigms`; allowed values: asym, sym"):
        check_config(bad)
    bad = copy.deepcopy(config)
    bad["students"] = ["lite0"]
    with pytest.raises(ConfigError, match=r"`students` names backbone alias 'lite0'.*defined aliases: tteacher, tstudent"):
        check_config(bad)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml")


def test_cli_reports_config_errors_cleanly(tmp_path, capsys):
    config = _config()
    config["bits"] = [20]
    assert main(["check-config", str(_write(tmp_path, config))]) == 2
    assert "error:" in capsys.readouterr().err


def test_cli_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "split" in out and "check-config" in out
