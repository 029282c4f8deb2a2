"""Files: model files (.npz with a JSON header), atomic writes, safe .npz reading, ONNX.

Modules:
    atomic      atomic writes (temp file, fsync, rename) and output-path checks
    npzfile     reading .npz archives without pickle, refusing corrupt or hostile ones
    model       save / load a Network (.npz or .safetensors)
    safetensors_file  the safetensors format (needs ``gpubp[safetensors]``)
    torch_weights  to and from a PyTorch nn.Sequential (needs ``gpubp[torch]``)
    onnx        the forward pass as an ONNX graph (needs ``gpubp[onnx]``)
"""

from gpubp.io.atomic import atomic_savez, atomic_write, check_output_path
from gpubp.io.model import load, read_npz, save

__all__ = ["save", "load", "read_npz", "atomic_write", "atomic_savez", "check_output_path"]
