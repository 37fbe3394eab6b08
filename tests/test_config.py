"""Config loading: schema validation with defaults, registry checks, clear errors."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from brcd.cli import main
from brcd.checks import check_config, load_checked_config
from brcd.config import REPO_ROOT, load_config, validate_schema
from brcd.data.fashion_mnist import DEBIAN_ROOT
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
    config = load_checked_config(REPO_ROOT / "config" / name)
    assert config["mode"] in ("bank", "online") and config["seeds"]


def test_defaults_filled_in():
    config = _config()
    del config["mode"]
    validate_schema(config)
    assert config["mode"] == "bank" and config["backbones"]["tteacher"]["head_input"] == "pooled"


@pytest.mark.parametrize("mutate,match", [
    (lambda c: c.update(bits=[12]), r"key `bits.0`: 12 is not a multiple of 8"),
    (lambda c: c.update(kd=[]), r"key `kd`: \[\] should be non-empty"),
    (lambda c: c.update(mode="fast"), r"key `mode`: 'fast' is not one of bank, online"),
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
    with pytest.raises(ConfigError, match=r"unknown value 'mnist' in `datasets`; allowed values: cifar10, cifar10_jpeg, coco"):
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


# ---------------------------------------------------------------- dataset entries (keys, sizes)


@pytest.mark.parametrize("dataset,key,match", [
    ("synthetic", "num_clases", r"`datasets.synthetic` has unknown key `num_clases` \(did you mean `num_classes`\?\); "
                                r"accepted keys: train, .*topk, protocol, num_classes, train_size"),
    ("synthetic", "roots", r"`datasets.synthetic` has unknown key `roots`; accepted keys: .*noise$"),
    ("fashion_mnist", "roots", r"`datasets.fashion_mnist` has unknown key `roots` \(did you mean `root`\?\); "
                               r"accepted keys: .*protocol, root, download$"),
    ("nuswide", "list", r"unknown key `list` \(did you mean `lists`\?\).*root, lists, num_classes$"),
])
def test_dataset_entry_rejects_unknown_keys(dataset, key, match):
    config = _config()
    sizes = {"train_per_class": 5, "query": 20, "val": 20, "topk": 10}
    config["datasets"] = {dataset: {**sizes, key: 4} if dataset == "synthetic" else {**sizes, "root": "/x", key: 4}}
    with pytest.raises(ConfigError, match=match):
        check_config(validate_schema(config), "c.yaml")


def test_every_dataset_declares_its_keys():
    from brcd.data import DATASETS
    from brcd.data.base import SPLIT_KEYS

    from brcd.options import Option

    for name in DATASETS:
        keys = DATASETS.get(name).options
        assert keys and not set(keys) & set(SPLIT_KEYS), name
        assert all(isinstance(option, Option) and option.help for option in keys.values()), name


@pytest.mark.parametrize("key,value,match", [
    ("query", 201, r"`datasets.synthetic.query` asks for 201 images but only 200 test images .* at most 200"),
    ("val", 141, r"`datasets.synthetic.val` asks for 141 .* at most 140"),  # 200 test images - 60 queries
    ("database", 401, r"`datasets.synthetic.database` asks for 401 .* at most 400"),
    ("topk", 301, r"`datasets.synthetic.topk` asks for 301 images but only 300 database images .* at most 300"),
    ("protocol", "random", r"`datasets.synthetic.protocol` is 'random'; allowed values: pool, train_test"),
])
def test_sizes_larger_than_the_dataset_fail_in_check_config(tmp_path, key, value, match):
    """Before any job: the split job's own message (key and largest valid value), from sizes the
    dataset declares, without reading it."""
    config = _config()
    config["datasets"]["synthetic"][key] = value
    with pytest.raises(ConfigError, match=match):
        load_checked_config(_write(tmp_path, config))
    assert main(["check-config", str(_write(tmp_path, config))]) == 2


def test_declared_sizes_need_no_data(tmp_path):
    """Fashion-MNIST's and CIFAR-10's sizes are declared: checked even where the data is absent."""
    config = yaml.safe_load((REPO_ROOT / "config" / "demo.yaml").read_text())
    config["datasets"]["fashion_mnist"].update(root=str(tmp_path / "absent"), topk=20000)
    with pytest.raises(ConfigError, match=r"`datasets.fashion_mnist.topk` asks for 20000 .* at most 10000"):
        check_config(validate_schema(config))
    config["datasets"] = {"cifar10": {"root": str(tmp_path), "train_per_class": 500, "query": 5000, "val": 5001,
                                      "topk": 1000}}
    with pytest.raises(ConfigError, match=r"`datasets.cifar10.val` asks for 5001 .* at most 5000"):
        check_config(validate_schema(config))


@pytest.mark.skipif(not (Path(DEBIAN_ROOT) / "train-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed")
def test_declared_fashion_mnist_sizes_match_the_data():
    import numpy as np

    from brcd.data import DATASETS, create_dataset

    real, declared = create_dataset("fashion_mnist", {}), DATASETS.get("fashion_mnist").labels_only({})
    for part in ("train", "test"):
        assert (real.labels[real.partitions[part]].sum(axis=0) == declared.labels[declared.partitions[part]].sum(axis=0)).all()
    assert np.array_equal(real.labels.sum(axis=0), declared.labels.sum(axis=0))


def test_list_file_sizes_are_checked_by_the_split_job(tmp_path):
    """NUS-WIDE & co. know their sizes once the lists are read: check-config passes, the split
    job (before it writes anything) names the key and the largest valid value."""
    from brcd.data import create_dataset
    from brcd.data.splits import write_splits
    from tests.test_data import _write_list_dataset

    _write_list_dataset(tmp_path)  # 12 labelled images
    entry = {"root": str(tmp_path), "lists": ["database.txt", "test.txt"], "train": 2, "query": 2, "val": 2,
             "topk": 9}
    config = _config()
    config["datasets"] = {"nuswide": entry}
    check_config(validate_schema(config))
    out = tmp_path / "split.parquet"
    with pytest.raises(ConfigError, match=r"`datasets.nuswide.topk` asks for 9 images but only 8 database images .* at most 8"):
        write_splits(out, create_dataset("nuswide", entry), entry, seed=0)
    assert not out.exists()


def test_validation_never_shrinks_topk():
    import numpy as np

    from brcd.train import Validator

    labels = np.eye(4, dtype=np.uint8)
    with pytest.raises(ConfigError, match=r"`topk` 5 is larger than the database \(4 images\).* at most 4"):
        Validator(np.zeros((2, 3)), labels[:2], np.zeros((4, 3)), labels, 5, {"sym": None})


# ---------------------------------------------------------------- one numeric rule (issue 28)


def test_whole_numbers_are_read_as_integers_everywhere(tmp_path):
    """16.0 (YAML) and "16" (how `--config 'bits=[16]'` passes a list item) are 16 wherever the config
    wants an integer: the axes, the dataset entries, the per-method settings; the checked config holds ints."""
    config = _config()
    config.update(bits=[16.0], seeds=["0", 1.0], kd=["none", "crd"], kd_settings={"crd": {"negatives": "7"}})
    config["datasets"]["synthetic"].update(topk=50.0, num_classes="4")
    checked = load_checked_config(_write(tmp_path, config))
    assert checked["bits"] == [16] and checked["seeds"] == [0, 1]
    assert checked["datasets"]["synthetic"]["topk"] == 50 and checked["datasets"]["synthetic"]["num_classes"] == 4
    assert checked["kd_settings"]["crd"]["negatives"] == 7
    for value in (checked["bits"][0], checked["seeds"][0], checked["datasets"]["synthetic"]["topk"],
                  checked["kd_settings"]["crd"]["negatives"]):
        assert type(value) is int


@pytest.mark.parametrize("mutate,match", [
    (lambda c: c.update(bits=[16.5]), r"key `bits.0`: 16.5 is not an integer in \[8, 4096\], a multiple of 8"),
    (lambda c: c.update(bits=16), r"key `bits`: 16 is not a non-empty list .* \(e.g. \[16, 32, 64\]\)"),
    (lambda c: c.update(seeds=[99999999999999999999]),
     r"key `seeds.0`: 99999999999999999999 is greater than the maximum of 2147483647; allowed: an integer in "
     r"\[0, 2147483647\]"),
    (lambda c: c.update(seeds=[0, 0.0]), r"key `seeds`: \[0, 0\] has non-unique elements; allowed: a non-empty list "
                                         r"of distinct values"),
    (lambda c: c["train"]["student"].update(lr=float("nan")), r"key `train.student.lr`: nan is not a finite number > 0"),
    (lambda c: c.update(name="x" * 5000), r"key `name`: 'xxx.*\(5002 characters\) is not a string .* of at most 100 "
                                          r"characters"),
    (lambda c: c["datasets"]["synthetic"].update(train_size=10_000_000_000),
     r"`datasets.synthetic.train_size` must be an integer in \[1, 1000000\]; got 10000000000"),
    (lambda c: c["datasets"]["synthetic"].update(num_classes="four"),
     r"`datasets.synthetic.num_classes` must be an integer in \[1, 1000\]; got 'four'"),
    (lambda c: c["backbones"]["tstudent"].update(hidden=10**9), r"key `backbones.tstudent.hidden`: 1000000000 is "
                                                                r"greater than the maximum of 65536"),
])
def test_numbers_out_of_form_are_named_with_the_allowed_form(tmp_path, capsys, mutate, match):
    """Issue 28: each value fails at parse time (`brcd check-config`, the Snakefile), naming the key,
    the value and the allowed form -- not a MissingInputException, a MemoryError or a traceback later."""
    config = _config()
    mutate(config)
    path = _write(tmp_path, config)
    with pytest.raises(ConfigError, match=match):
        load_checked_config(path)
    assert main(["check-config", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_config_that_is_not_utf8_is_named_with_its_line(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(TEST_CONFIG.read_bytes().replace(b"name: test", b"name: test\ndescription: caf\xe9"))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path} is not UTF-8 text: byte 0xe9 on line 4" in err and "save the file as UTF-8" in err, err
    assert "Traceback" not in err


# ---------------------------------------------------------------- BRCD's clusters against the training split (issue 28)


def test_more_clusters_than_training_images_fail_at_parse_time(tmp_path, capsys):
    """The tiny grid draws 40 images per class x 4 classes = 160 training images: K = 500 cannot work. It
    used to pass the check and fail in the cluster job, after features and teacher training."""
    config = _config()
    config["brcd"]["clusters"] = 500
    path = _write(tmp_path, config)
    with pytest.raises(ConfigError, match=r"`datasets.synthetic` draws 160 training images: `brcd.clusters` = 500 "
                                          r"exceeds the 160 training images; lower `brcd.clusters` to at most 160"):
        load_checked_config(path)
    assert main(["check-config", str(path)]) == 2
    config["brcd"].update(clusters="auto", cluster_range=[200, 300])
    with pytest.raises(ConfigError, match=r"`brcd.cluster_range` = \[200, 300\] leaves no feasible K for 160"):
        check_config(validate_schema(config))
    config["kd"] = ["none"]  # no method of the grid clusters: nothing to check
    check_config(validate_schema(config))


def test_list_file_clusters_are_checked_by_the_split_job_or_from_its_split_file(tmp_path, monkeypatch):
    """NUS-WIDE & co.: the split job (the grid's first) checks K against the training split it draws; once
    a split file of this draw exists, the parse-time check reads its size from there."""
    import argparse

    from brcd.data.split_cli import run as split
    from tests.test_data import _write_list_dataset

    _write_list_dataset(tmp_path)  # 12 labelled images
    config = _config()
    config["datasets"] = {"nuswide": {"root": str(tmp_path), "lists": ["database.txt", "test.txt"], "train": 4,
                                      "query": 2, "val": 2, "topk": 4}}
    config["brcd"]["clusters"] = 6
    monkeypatch.chdir(tmp_path)
    check_config(validate_schema(config))  # the sizes are unknown before the lists are read
    path = _write(tmp_path, config)
    out = tmp_path / "results" / "nuswide" / "split.parquet"
    with pytest.raises(ConfigError, match=r"`datasets.nuswide` draws 4 training images: `brcd.clusters` = 6 exceeds"):
        split(argparse.Namespace(config=str(path), dataset="nuswide", out=str(out)))
    with pytest.raises(ConfigError, match=r"`datasets.nuswide` draws 4 training images: `brcd.clusters` = 6"):
        check_config(validate_schema(config))  # the split file of this draw is there: its size is known
    config["datasets"]["nuswide"]["train"] = 5  # another draw: the split job will tell
    check_config(validate_schema(config))


def test_input_size_per_dataset_is_resolved_per_dataset():
    """One backbone alias serves several datasets with a size chosen on each one's validation: every use
    (banks, heads, timing, the cell's config hash) sees that dataset's size; a dataset the mapping
    misses is named with the fix before any job."""
    from brcd.cells import Cell
    from brcd.config import backbone_options
    from brcd.models import check_backbone_entries

    config = load_config(REPO_ROOT / "config" / "study.yaml")
    assert backbone_options(config, "lite2", "fashion_mnist")["input_size"] == 64
    assert backbone_options(config, "lite2", "cifar10_jpeg")["input_size"] == 96
    with pytest.raises(ConfigError, match="given per dataset"):
        backbone_options(config, "lite2")
    cell = Cell("fashion_mnist", 16, "cibhash", "lite2", seed=0)
    old = copy.deepcopy(config)  # the same grid with the Fashion-MNIST sizes written as plain integers
    old["backbones"]["lite2"]["input_size"] = 64
    assert cell.config_subset(config)["teacher_backbone"] == cell.config_subset(old)["teacher_backbone"]
    broken = copy.deepcopy(config)
    del broken["backbones"]["lite0"]["input_size"]["cifar10_jpeg"]
    validate_schema(broken)
    with pytest.raises(ConfigError, match=r"backbones.lite0.input_size` has no size for dataset 'cifar10_jpeg'"):
        check_backbone_entries(broken)
