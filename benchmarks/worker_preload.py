"""Does preloading torch / transformers / DeepSpeed in Ray's pooled worker processes
(runtime_env ``worker_process_setup_hook``) make a Ray Train worker's start cheaper? Creates a
1-CPU actor that imports the three, three times, on a local cluster with and without the hook
(each run after 25 s for the pool's prestarted workers to come up).

    .venv/bin/python benchmarks/worker_preload.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

HOOK = "def preload():\n    import torch, transformers, deepspeed  # noqa\n"


def one(mode: str, hook_dir: str) -> None:
    import ray

    env: dict = {"env_vars": {"PYTHONPATH": hook_dir}}
    if mode == "hook":
        env["worker_process_setup_hook"] = "w2s_preload_hook.preload"
    ray.init(num_cpus=2, include_dashboard=False, runtime_env=env, log_to_driver=False)
    time.sleep(25)

    @ray.remote(num_cpus=1)
    class Imports:
        def go(self) -> tuple[float, int]:
            t = time.time()
            import deepspeed  # noqa: F401
            import torch  # noqa: F401
            import transformers  # noqa: F401

            return time.time() - t, os.getpid()

    for i in range(3):
        t = time.time()
        actor = Imports.remote()
        imports, pid = ray.get(actor.go.remote())
        print(f"{mode} actor {i}: create + call {time.time() - t:.2f} s, imports in it "
              f"{imports:.2f} s (pid {pid})", flush=True)  # fmt: skip
        ray.kill(actor)
        time.sleep(3)
    ray.shutdown()


def main() -> None:
    if len(sys.argv) == 3:  # a child process: one mode on a fresh cluster
        one(sys.argv[1], sys.argv[2])
        return
    with tempfile.TemporaryDirectory() as hook_dir:
        with open(os.path.join(hook_dir, "w2s_preload_hook.py"), "w") as fh:
            fh.write(HOOK)
        for mode in ("none", "hook"):
            subprocess.run([sys.executable, __file__, mode, hook_dir], check=True)


if __name__ == "__main__":
    main()
