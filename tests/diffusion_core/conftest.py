import pytest
import torch

from diffusion_core.generation.engine import Engine
from evaluation.tiny_model import make_tiny_model


# Tiny models gain nothing from a second thread, and OpenMP's spinning threads slow to a
# crawl when the CPU is shared with other work.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny"), seed=1)


@pytest.fixture()
def engine(tiny_dir):
    return Engine.load(tiny_dir, "cpu")
