"""Hold a folder the way a writer does, until killed: `hold_folder.py staged TARGET` is inside
`amrg.fileio.staged_folder(TARGET)` with a half-written file in its staging folder; `hold_folder.py lock TARGET` holds
`amrg.fileio.folder_lock(TARGET)` (what a training run holds on its output folder). Prints `ready` once it holds it.
The tests SIGKILL it to leave what a killed writer leaves behind."""

import sys
import time

from amrg.fileio import folder_lock, staged_folder


if __name__ == "__main__":
    mode, target = sys.argv[1], sys.argv[2]
    holder = staged_folder(target) if mode == "staged" else folder_lock(target)
    with holder as held:
        if mode == "staged":
            (held / "half_written.txt").write_text("a write that never finished")
        print("ready", flush=True)
        time.sleep(600)
