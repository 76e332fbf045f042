"""``duet``: one entry for every command, lazy dispatch, defaults in --help, the commands' exit codes."""

import logging
import sys

import pytest

from duet_sdk import __version__, cli
from duet_sdk._extras import EXTRA_OF
from duet_sdk.cli_common import command_parser, configure_logging


def test_duet_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0 and __version__ in capsys.readouterr().out


def test_duet_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and all(name in out for name in cli.COMMANDS)


def test_an_unknown_command_is_bad_input(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["deploy"])
    assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "experiment", "export", "publish", "serve", "tune"])
def test_each_command_help_shows_defaults_version_and_verbosity(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert "--version" in out and "-v, --verbose" in out and "-q, --quiet" in out
    if command != "experiment":  # its options live on its subcommands (checked below)
        assert "(default: " in out


def test_experiment_subcommand_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["experiment", "table1", "--help"])
    assert "(default: [0, 1, 2])" in capsys.readouterr().out


def test_duet_passes_the_commands_exit_code_through(monkeypatch):
    module = type(sys)("duet_fake_command")
    module.main = lambda argv: 3 if argv == ["--reject"] else 0
    monkeypatch.setitem(sys.modules, "duet_fake_command", module)
    monkeypatch.setitem(cli.COMMANDS, "train", ("duet_fake_command", "main", "a fake"))
    assert cli.main(["train", "--reject"]) == 3
    assert cli.main(["train"]) == 0


def test_publish_with_bad_input_exits_2(tmp_path, capsys):
    assert cli.main(["publish", "--model-repository", str(tmp_path), "--export", str(tmp_path / "none")]) == 2
    assert "duet-publish: error" in capsys.readouterr().err


def test_bench_outside_a_source_checkout_says_where_it_runs(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(cli.COMMANDS, "bench", ("benchmarks_absent.bench", "main", "absent"))
    assert cli.main(["bench"]) == 2
    assert "source checkout" in capsys.readouterr().err


def test_a_command_whose_extra_is_missing_exits_2_naming_the_extra(monkeypatch, tmp_path, capsys):
    (tmp_path / "duet_needs_missing.py").write_text("import duet_missing_dependency\n\ndef main(argv):\n    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(EXTRA_OF, "duet_missing_dependency", "serve")
    monkeypatch.setitem(cli.COMMANDS, "serve", ("duet_needs_missing", "main", "needs a missing package"))
    assert cli.main(["serve"]) == 2
    assert "pip install 'duet_sdk[serve]'" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "level"), [([], logging.WARNING), (["-v"], logging.INFO), (["-vv"], logging.DEBUG),
                                              (["-q"], logging.ERROR), (["-qqq"], logging.CRITICAL)])
def test_verbosity_flags_set_our_log_level_and_keep_other_libraries_at_warning(flags, level):
    root, ours = logging.getLogger(), logging.getLogger("duet_sdk")
    saved = root.level, root.handlers[:], ours.level
    try:
        assert configure_logging(command_parser("duet-x", None).parse_args(flags)) == level
        assert ours.getEffectiveLevel() == level
        assert logging.getLogger("onnxscript.optimizer").getEffectiveLevel() == (
            logging.DEBUG if level == logging.DEBUG else max(level, logging.WARNING))
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        ours.setLevel(saved[2])
