"""The command line is assembled from every area's module; a missing one is an error, never a silent gap."""

from __future__ import annotations

import pytest

import midog_viewer.cli as cli


def test_every_area_registers_its_commands():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps no public list of sub-commands
    assert {"open", "detect", "import", "export", "counts", "evaluate", "train", "batch"} <= set(commands)


def test_a_missing_command_module_is_an_error_not_a_skipped_area(monkeypatch):
    monkeypatch.setattr(cli, "_COMMAND_MODULES", (*cli._COMMAND_MODULES, "not_built_yet"))
    with pytest.raises(ModuleNotFoundError, match="not_built_yet"):
        cli.build_parser()
