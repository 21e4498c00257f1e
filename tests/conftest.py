import os

# Triton reads its interpreter switch when it is first imported, and any test module may import the kernels at
# collection time; set it before all of them so tests/test_kernels.py always gets interpreted kernels (on CPU the
# dispatchers run PyTorch either way).
os.environ.setdefault("TRITON_INTERPRET", "1")

"""Shared test setup."""

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: one thread is as fast as two and does not fight other processes for the 2 CI cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    """The shipped ``tiny-llada`` (loaded once per module)."""
    import dllm

    return dllm.load_model("tiny-llada")
