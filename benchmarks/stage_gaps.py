"""Where a sweep's wall time goes between runs: from a store's metrics.json stamps, per run the
worker process start, loop start, train and eval ends, and per stage the gap from the previous
stage's last run end to this stage's first worker process (a store holding one sweep).

    .venv/bin/python benchmarks/stage_gaps.py w2s_results/quickstart
"""

from __future__ import annotations

import sys

from w2sray.artifacts import METRICS
from w2sray.store import Store


def main(store_path: str) -> None:
    store = Store(store_path)
    rows = []
    for key in store.run_keys():
        if not store.is_complete(key):
            continue
        m = store.read_json(key, METRICS)
        if "t_process_start" not in m:
            continue
        end = m.get("t_eval_end") or m.get("t_train_end")
        rows.append((m["t_process_start"], key, m["t_loop_start"], m.get("setup_seconds"), end))
    rows.sort()
    t0 = rows[0][0]
    print("| run | process start s | loop start s | setup s | end s |")
    print("|---|---|---|---|---|")
    for proc, key, loop, setup, end in rows:
        setup_s = f"{setup:.2f}" if setup is not None else "-"
        print(f"| {key} | {proc - t0:.1f} | {loop - t0:.1f} | {setup_s} | {end - t0:.1f} |")
    stages: dict[str, list] = {}
    for r in rows:
        stages.setdefault(r[1].split("-")[0], []).append(r)
    previous_end = None
    for kind, runs in stages.items():
        first_proc = min(r[0] for r in runs)
        gap = f"{first_proc - previous_end:.1f} s" if previous_end is not None else "-"
        start_to_loop = min(r[2] for r in runs) - first_proc
        print(f"{kind}: gap from the previous stage {gap}; process -> loop {start_to_loop:.1f} s")
        previous_end = max(r[4] for r in runs)


if __name__ == "__main__":
    main(sys.argv[1])
