"""Names checked with anchored patterns refuse a trailing newline (``re.match`` with ``$``
accepts ``"name\\n"``; every check uses ``fullmatch``)."""

from __future__ import annotations

import pytest

from kaito_core.errors import ContractError, KaitoError
from kaito_core.oci import parse_reference
from kaito_core.runtime.options import check_adapter_name
from tests.core.presets import make_preset


@pytest.mark.parametrize("field", ["name", "family"])
def test_preset_names_refuse_a_trailing_newline(field):
    make_preset("ok-name")  # the factory's preset is valid as is
    with pytest.raises(ContractError, match=field):
        make_preset("ok-name\n") if field == "name" else make_preset("ok-name", family="phi3\n")


def test_preset_revision_and_repo_refuse_a_trailing_newline():
    with pytest.raises(ContractError, match="revision"):
        make_preset("ok-name", revision="0" * 40 + "\n")
    with pytest.raises(ContractError, match="hf_repo"):
        make_preset("ok-name", hf_repo="org/model\n")


def test_adapter_names_refuse_a_trailing_newline():
    assert check_adapter_name("sql-lora") == "sql-lora"
    with pytest.raises(KaitoError):
        check_adapter_name("sql-lora\n")


@pytest.mark.parametrize("ref", ["registry.example.com/a/b\n:v1", "registry.example.com\n/a/b:v1",
                                 "registry.example.com/a/b:v1\n@sha256:" + "0" * 64])
def test_oci_references_refuse_a_newline_inside(ref):
    parse_reference(ref.replace("\n", ""))
    with pytest.raises(KaitoError):
        parse_reference(ref)


def test_oci_references_are_read_without_surrounding_whitespace():
    """A reference folded out of YAML keeps no newline: the text used is the stripped one."""
    assert parse_reference("registry.example.com/a/b:v1\n").text == "registry.example.com/a/b:v1"
