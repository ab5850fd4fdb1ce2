"""Wheels ship the package's compiled CPU code (everything else is in pyproject.toml).

Two kinds, both built after the usual ``build_py`` copy, both optional:

- the one-thread CPU drivers compiled ahead of time into an extension
  module (``python -m gpu_bytepiece.aot``, Numba's ``pycc``;
  needs a C compiler): a short text is then encoded without importing
  Numba. When it cannot be built the wheel has no such module and the JIT
  serves every path (a note says so);
- the Numba cache of every JIT path, below.

After the usual ``build_py`` copy, a fresh process imports the copied
package, runs every CPU path once with the JIT (``python -m
gpu_bytepiece.precompile --ship``, ``GPU_BYTEPIECE_AOT=0``) and leaves the Numba cache in ``gpu_bytepiece/_jit/<content key>/``
with the machine it was compiled for. An install on a machine with the same
CPU (and the same Python and Numba) loads that code on its first call;
elsewhere it compiles as usual (``gpu_bytepiece.jit_cache``). Skipped for
editable installs (both kinds), when ``GPU_BYTEPIECE_PRECOMPILE=0`` (both
kinds; the wheel is then ``py3-none-any``), and (with a note)
when the build environment lacks the runtime dependencies (an isolated build:
``pip wheel --no-build-isolation .`` or ``python -m build --no-isolation``
in an environment with them installed ships the code).
"""

import os
import shutil
import subprocess
import sys

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py


def _precompile_wanted(cmd) -> bool:
    return not getattr(cmd, "editable_mode", False) and os.environ.get("GPU_BYTEPIECE_PRECOMPILE") != "0"


class BuildPyWithMachineCode(build_py):
    def run(self):
        super().run()
        if not _precompile_wanted(self):
            return
        lib = os.path.abspath(self.build_lib)
        out = os.path.join(lib, "gpu_bytepiece", "_jit")
        shutil.rmtree(out, ignore_errors=True)  # never ship a previous build's code
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "GPU_BYTEPIECE"))}
        env["PYTHONPATH"] = lib
        self._ahead_of_time(lib, env)
        # the JIT's cache covers every path, the one-chunk driver included (used when the
        # extension module is missing or stale): warm it without the module
        env = dict(env, GPU_BYTEPIECE_AOT="0")
        code = ("import sys, gpu_bytepiece; assert gpu_bytepiece.__file__.startswith(sys.argv[1]), gpu_bytepiece.__file__; "
                "from gpu_bytepiece.precompile import main; sys.exit(main(['--ship', sys.argv[2]]))")
        proc = subprocess.run([sys.executable, "-c", code, lib, out], env=env, cwd=lib)
        if proc.returncode:
            shutil.rmtree(out, ignore_errors=True)
            print("gpu-bytepiece: no compiled code shipped in this build (precompiling failed: are numpy "
                  "and numba installed in the build environment?); it compiles on first use", file=sys.stderr)


    @staticmethod
    def _ahead_of_time(lib, env):
        pkg = os.path.join(lib, "gpu_bytepiece")
        for name in os.listdir(pkg):  # never ship a previous build's module
            if name.startswith("_aot_cpu."):
                os.remove(os.path.join(pkg, name))
        code = ("import sys, gpu_bytepiece; assert gpu_bytepiece.__file__.startswith(sys.argv[1]), gpu_bytepiece.__file__; "
                "from gpu_bytepiece.aot import main; sys.exit(main([sys.argv[2]]))")
        proc = subprocess.run([sys.executable, "-c", code, lib, pkg], env=env, cwd=lib)
        if proc.returncode:
            print("gpu-bytepiece: no ahead-of-time CPU module in this build (is there a C compiler, and numba "
                  "in the build environment?); every path uses the JIT", file=sys.stderr)


class MachineCodeDistribution(Distribution):
    """A wheel with machine code (the ahead-of-time module, the Numba cache) is
    tagged for its Python and platform, not ``py3-none-any``."""

    def has_ext_modules(self):
        return os.environ.get("GPU_BYTEPIECE_PRECOMPILE") != "0"


setup(cmdclass={"build_py": BuildPyWithMachineCode}, distclass=MachineCodeDistribution)
