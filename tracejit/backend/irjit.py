"""A translated nest's machine code: compiled at O3 with Numba's target machine
(the features and options of its kernels), loaded into one MCJIT engine, and
registered by symbol for the kernels' machine code, which Numba links by name."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import threading
from pathlib import Path

from llvmlite import binding as llvm

from ..core import forksafe
from . import numba_cache
from .irgen import FORMAT, Translation

ENABLED = os.environ.get("TRACEJIT_NEST_IR", "1").strip().lower() not in ("0", "false", "no")
_DECLARED = re.compile(r'^declare [^@]*@"?([^"(\s]+)"?\(', re.M)


def declared(llvm_ir: str) -> list[str]:
    """The functions a module's LLVM IR declares (calls, defined elsewhere)."""
    return _DECLARED.findall(llvm_ir)


def symbol_for(py_func, params: list, salt: str) -> str:
    """The nest's symbol for these argument types on this machine (the translation's
    code, LLVM and the CPU included, so an object file is only ever loaded where it
    was made for; `salt` stands for the rest: the runtime helpers, Numba's version)."""
    described = [[p.dtype.str, p.ndim, p.layout] for p in params]
    key = json.dumps([FORMAT, _translator_digest(), salt, described, _machine()])
    return f"{py_func.__name__}_{hashlib.sha256(key.encode()).hexdigest()[:10]}"


@functools.lru_cache(maxsize=1)
def _translator_digest() -> str:
    """The translation's own code (a changed irgen.py never loads an older object)."""
    here = Path(__file__).parent
    return hashlib.sha256(b"".join((here / name).read_bytes()
                                   for name in ("irgen.py", "irtypes.py"))).hexdigest()


@functools.lru_cache(maxsize=1)
def _machine() -> list:
    return [llvm.llvm_version_info, llvm.get_host_cpu_name(),
            llvm.get_host_cpu_features().flatten()]


def machine_code(translation: Translation) -> bytes:
    """Object code of the translation, optimised at O3 (loops vectorised) for this
    CPU, with Numba's target machine (the same features and options as its kernels)."""
    from numba.core.compiler_lock import global_compiler_lock

    with global_compiler_lock:  # Numba's target machine is not shared across threads
        module, machine = _optimised_module(translation)
        return machine.emit_object(module)


def optimised(translation: Translation) -> str:
    """The translation's LLVM IR after optimisation (what `machine_code` compiles)."""
    from numba.core.compiler_lock import global_compiler_lock

    with global_compiler_lock:
        return str(_optimised_module(translation)[0])


def _optimised_module(translation: Translation):
    from numba.core.registry import cpu_target

    machine = cpu_target.target_context.codegen()._tm
    module = llvm.parse_assembly(translation.text)
    for helper in translation.helpers:
        module.link_in(llvm.parse_assembly(helper.text))
    module.triple = machine.triple
    module.data_layout = str(machine.target_data)
    module.verify()
    tuning = llvm.create_pipeline_tuning_options(speed_level=3)
    tuning.loop_vectorization = True
    tuning.slp_vectorization = True
    passes = llvm.create_pass_builder(machine, tuning)
    passes.getModulePassManager().run(module, passes)
    return module, machine


_lock = threading.Lock()
forksafe.renew_after_fork(globals(), "_lock", threading.Lock)
_engine: list = []  # one MCJIT engine holds every nest object loaded in this process
_loaded: dict[str, int] = {}  # symbol -> address


def load(symbol: str, code: bytes) -> None:
    """Make `symbol` resolvable by the kernels' machine code (Numba links by symbol)."""
    if symbol in _loaded:
        return
    numba_cache.runtime_symbols()  # before our lock: a compile holds Numba's, then ours
    with _lock:
        if symbol in _loaded:
            return
        if not _engine:
            target = llvm.Target.from_triple(llvm.get_process_triple())
            machine = target.create_target_machine(cpu=_machine()[1], features=_machine()[2],
                                                   jit=True)
            _engine.append(llvm.create_mcjit_compiler(llvm.parse_assembly(""), machine))
        engine = _engine[0]
        engine.add_object_file(llvm.ObjectFileRef.from_data(code))
        engine.finalize_object()
        address = engine.get_function_address(symbol)
        if not address:
            raise RuntimeError(f"nest object without its symbol {symbol}")
        llvm.add_symbol(symbol, address)
        _loaded[symbol] = address


def is_loaded(symbol: str) -> bool:
    return symbol in _loaded
