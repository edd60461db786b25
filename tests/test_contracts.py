"""Every registered plugin passes the contract checks: a new plugin is tested with no new test."""

import pytest

from agemetric import plugins, testing


@pytest.mark.parametrize("name", plugins.list_names("backbone"))
def test_backbone_contract(name):
    testing.check_backbone(name)


@pytest.mark.parametrize("name", plugins.list_names("miner"))
def test_miner_contract(name):
    testing.check_miner(name)


@pytest.mark.parametrize("name", plugins.list_names("loss"))
def test_loss_contract(name):
    testing.check_loss(name)


@pytest.mark.parametrize("name", plugins.list_names("retriever"))
def test_retriever_contract(name):
    testing.check_retriever(name)


@pytest.mark.parametrize("name", plugins.list_names("framer"))
def test_framer_contract(name):
    testing.check_framer(name)
