"""Fixtures of the hostile suite: tiny random model folders (never the shipped base)."""
import pytest
import torch

from evaluation.tiny_model import make_tiny_model

# Tiny models gain nothing from a second thread on a shared CPU.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny"), seed=1)
