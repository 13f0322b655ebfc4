"""Official checkpoint formats load; anything else is refused with one clear line."""
from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from edgeformer_deploy.errors import CheckpointError
from edgeformer_deploy.models import create_model, load_weights


@pytest.fixture(scope="module")
def official_state(official_dir):
    return torch.load(official_dir / "edgeformer_s.pt", weights_only=True)


def _logits(model):
    torch.manual_seed(0)
    with torch.no_grad():
        return model.eval()(torch.rand(1, 3, 256, 256))


def test_official_alias_keys_load(official_dir, official_state):
    assert any(k.startswith("residual.") for k in official_state)
    create_model("edgeformer_s", weights=official_dir / "edgeformer_s.pt")


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module_prefix"])
def test_wrapped_checkpoints(tmp_path, official_dir, official_state, wrap):
    if wrap == "module_prefix":
        obj = {f"module.{k}": v for k, v in official_state.items()}
    else:
        obj = {wrap: dict(official_state), "epoch": 3}
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    reference = _logits(create_model("edgeformer_s", weights=official_dir / "edgeformer_s.pt"))
    assert torch.equal(_logits(create_model("edgeformer_s", weights=path)), reference)


def test_safetensors(tmp_path, official_dir, official_state):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in official_state.items() if not k.startswith("residual.")}, str(path))
    reference = _logits(create_model("edgeformer_s", weights=official_dir / "edgeformer_s.pt"))
    assert torch.equal(_logits(create_model("edgeformer_s", weights=path)), reference)


def test_wrong_variant_is_one_short_line(official_dir):
    with pytest.raises(CheckpointError) as info:
        create_model("edgeformer_xs", weights=official_dir / "edgeformer_s.pt")
    message = str(info.value)
    assert "edgeformer_xs" in message and "mis-shaped" in message and "unexpected" in message
    assert "\n" not in message and len(message) < 700


def test_wrong_architecture(official_dir):
    with pytest.raises(CheckpointError, match="mobilevit_s.*missing"):
        create_model("mobilevit_s", weights=official_dir / "edgeformer_s.pt")


def test_truncated_file(tmp_path, official_dir):
    data = (official_dir / "edgeformer_s.pt").read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        create_model("edgeformer_s", weights=path)


@pytest.mark.parametrize("content", [b"", b"this is not a checkpoint\n"])
def test_empty_and_text_files(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        create_model("edgeformer_s", weights=path)


def test_non_checkpoint_pickle(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a model checkpoint"):
        create_model("edgeformer_s", weights=path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        create_model("edgeformer_s", weights=tmp_path / "nope.pt")


class _Payload:
    """Unpickling this object would create ``marker`` — proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("container", ["plain_pickle", "torch_zip"])
def test_code_executing_pickle_is_refused_not_run(tmp_path, container):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if container == "plain_pickle":
        path.write_bytes(pickle.dumps({"conv_1.block.conv.weight": _Payload(marker)}))
    else:
        torch.save({"conv_1.block.conv.weight": _Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        load_weights(create_model("edgeformer_s"), path)
    assert not marker.exists()
