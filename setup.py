"""Wheels ship the package's compiled CPU code (everything else is in pyproject.toml).

After the usual ``build_py`` copy, a fresh process imports the copied
package, runs every CPU path once (``python -m gpu_bytepiece.precompile
--ship``) and leaves the Numba cache in ``gpu_bytepiece/_jit/<content key>/``
with the machine it was compiled for. An install on a machine with the same
CPU (and the same Python and Numba) loads that code on its first call;
elsewhere it compiles as usual (``gpu_bytepiece.jit_cache``). Skipped for
editable installs, when ``GPU_BYTEPIECE_PRECOMPILE=0``, and (with a note)
when the build environment lacks the runtime dependencies (an isolated build:
``pip wheel --no-build-isolation .`` or ``python -m build --no-isolation``
in an environment with them installed ships the code).
"""

import os
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithMachineCode(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False) or os.environ.get("GPU_BYTEPIECE_PRECOMPILE") == "0":
            return
        lib = os.path.abspath(self.build_lib)
        out = os.path.join(lib, "gpu_bytepiece", "_jit")
        shutil.rmtree(out, ignore_errors=True)  # never ship a previous build's code
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "GPU_BYTEPIECE"))}
        env["PYTHONPATH"] = lib
        code = ("import sys, gpu_bytepiece; assert gpu_bytepiece.__file__.startswith(sys.argv[1]), gpu_bytepiece.__file__; "
                "from gpu_bytepiece.precompile import main; sys.exit(main(['--ship', sys.argv[2]]))")
        proc = subprocess.run([sys.executable, "-c", code, lib, out], env=env, cwd=lib)
        if proc.returncode:
            shutil.rmtree(out, ignore_errors=True)
            print("gpu-bytepiece: no compiled code shipped in this build (precompiling failed: are numpy "
                  "and numba installed in the build environment?); it compiles on first use", file=sys.stderr)


setup(cmdclass={"build_py": BuildPyWithMachineCode})
