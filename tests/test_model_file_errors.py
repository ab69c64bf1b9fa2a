"""A damaged model directory gives an error naming the file (and the tensor), not a bare JSONDecodeError,
MemoryError, ValueError or KeyError."""

import json
import struct

import numpy as np
import pytest
from flax import nnx

from pragjax.models import Decoder, ModelConfig, load_hf, save_hf
from pragjax.models.hf_io import CheckpointError
from pragjax.models.safetensors_io import SafetensorsError, SafetensorsFile, write_file


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  cfg = ModelConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1, head_dim=8)
  path = tmp_path_factory.mktemp("m") / "model"
  save_hf(Decoder(cfg, rngs=nnx.Rngs(0)), cfg, str(path))
  return path


def test_invalid_config_json_names_the_file(model_dir, tmp_path):
  import shutil

  broken = tmp_path / "model"
  shutil.copytree(model_dir, broken)
  (broken / "config.json").write_text('{"model_type": "llama", ')
  with pytest.raises(CheckpointError, match=rf"{broken}/config\.json: not valid JSON"):
    load_hf(str(broken))


def _with_header(path, header: dict, data: bytes):
  blob = json.dumps(header).encode()
  path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def test_garbage_header_length_names_the_file(tmp_path):
  path = tmp_path / "x.safetensors"
  path.write_bytes(b"\xff" * 8 + b"{}")
  with pytest.raises(SafetensorsError, match=rf"{path}: header length \d+ exceeds the file's 10 bytes"):
    SafetensorsFile(str(path))


@pytest.mark.parametrize("entry,message", [
    ({"dtype": "F32", "shape": [2, 2]}, "header entry has no 'data_offsets'"),
    ({"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 4]}, r"data_offsets must be \[begin, end\]"),
    ({"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}, "span 12 bytes, but shape"),
    ({"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 32]}, "end past the 16 bytes of tensor data"),
    ({"shape": [2, 2], "data_offsets": [0, 16]}, "header entry has no 'dtype'"),
])
def test_inconsistent_tensor_entry_names_file_and_tensor(tmp_path, entry, message):
  path = tmp_path / "x.safetensors"
  _with_header(path, {"w": entry}, np.zeros(4, np.float32).tobytes())
  with pytest.raises(SafetensorsError, match=rf"{path}: tensor 'w': .*{message}"):
    SafetensorsFile(str(path))


def test_damaged_weights_file_in_a_model_dir_names_file_and_tensor(model_dir, tmp_path):
  import shutil

  broken = tmp_path / "model"
  shutil.copytree(model_dir, broken)
  st = broken / "model.safetensors"
  raw = st.read_bytes()
  (n,) = struct.unpack("<Q", raw[:8])
  header = json.loads(raw[8:8 + n])
  name = next(k for k in header if k != "__metadata__")
  del header[name]["data_offsets"]
  _with_header(st, header, raw[8 + n:])
  with pytest.raises(SafetensorsError, match=rf"{st}: tensor '{name}': header entry has no 'data_offsets'"):
    load_hf(str(broken))


def test_written_files_still_read_back(tmp_path):
  path = tmp_path / "ok.safetensors"
  arr = np.arange(6, dtype=np.float32).reshape(2, 3)
  write_file(str(path), [("a", arr.shape, arr.dtype, lambda: arr), ("e", (0,), np.float32, lambda: np.zeros(0))])
  f = SafetensorsFile(str(path))
  np.testing.assert_array_equal(f.read("a"), arr)
  assert f.read("e").shape == (0,)
