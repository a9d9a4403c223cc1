"""Which pipeline buffer each of an engine's I/O tensors is bound to, decided by tensor name and mode.

An engine lists its I/O tensors in an order of its own (inputs need not come first), and a stage may read and
write the same pipeline name (mlp reads the residual stream `x` and writes the next `x`). So every tensor is
matched by its name to the exported graph's inputs and outputs (`input{i}`/`output{i}`, kept by TensorRT's ONNX
parser), its mode is checked against that, and all inputs are resolved from the pipeline state as it was before
the stage, before any output buffer replaces a name in it.

TensorRT reports a refused address or a failed launch by returning False (and a log line), not by raising: both
returns are checked here, so a stage never runs on a buffer bound before or is timed without having run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

Buffer = TypeVar("Buffer")


def bind_stage(
    tensors: Sequence[tuple[str, str]],
    graph_inputs: Sequence[str],
    graph_outputs: Sequence[str],
    reads: Sequence[str],
    writes: Sequence[str],
    state: dict[str, Buffer],
    allocate: Callable[[str], Buffer],
) -> dict[str, Buffer]:
    """The buffer for each engine tensor, by name. `tensors` is the engine's (name, mode) list in its own order, the
    mode a TensorIOMode name ("INPUT", "OUTPUT"); inputs are the state's buffers for the stage's `reads`, outputs
    are new buffers from `allocate(name)` stored in `state` under the stage's `writes` once all inputs are bound."""
    if len(graph_inputs) != len(reads) or len(graph_outputs) != len(writes):
        raise ValueError(
            f"the graph has {len(graph_inputs)} inputs and {len(graph_outputs)} outputs, the stage reads "
            f"{list(reads)} and writes {list(writes)}"
        )
    read_of: Mapping[str, str] = dict(zip(graph_inputs, reads, strict=True))
    write_of: Mapping[str, str] = dict(zip(graph_outputs, writes, strict=True))
    modes = dict(tensors)
    if len(modes) != len(tensors):
        raise ValueError(f"the engine lists a tensor twice: {[name for name, _ in tensors]}")
    for name, mode in tensors:
        expected = "INPUT" if name in read_of else "OUTPUT" if name in write_of else None
        if expected is None:
            raise ValueError(f"engine tensor {name} is neither an input nor an output of the exported graph")
        if mode != expected:
            raise ValueError(f"engine tensor {name} is an {mode} of the engine but an {expected} of the graph")
    missing = [name for name in (*graph_inputs, *graph_outputs) if name not in modes]
    if missing:
        raise ValueError(f"the engine has no tensor(s) {missing} of the exported graph")
    bound = {name: state[read_of[name]] for name in graph_inputs}  # the state before this stage
    outputs = {name: allocate(name) for name in graph_outputs}
    state.update({write_of[name]: buffer for name, buffer in outputs.items()})
    return bound | outputs


def set_addresses(set_tensor_address: Callable[[str, int], bool], addresses: Mapping[str, int]) -> None:
    """Bind each engine tensor to its device address (an execution context's `set_tensor_address`), refusing in one
    line the first one TensorRT refuses (an unknown name, a misaligned or null address)."""
    for name, address in addresses.items():
        if not set_tensor_address(name, address):
            raise RuntimeError(f"TensorRT refused the address {address:#x} of tensor {name}")


def checked_launch(execute_async_v3: Callable[[int], Any], stream_handle: int) -> Callable[[], None]:
    """A pipeline step that enqueues one engine on the stream (an execution context's `execute_async_v3`) and
    raises where TensorRT reports that the launch failed."""

    def step() -> None:
        if not execute_async_v3(stream_handle):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")

    return step
