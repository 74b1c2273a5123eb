"""Stage 2 of the consolidator selection: per (task, config), the lr with the best validation
accuracy at dp = 0 (the first in grid order on a tie, as `suite --gather` breaks ties), then its
dp in {0.2, 0.5, 0.8} jobs are restored from held/ and the other lr's are dropped."""
import json, os, sys, glob, collections
R = sys.argv[1]
groups = collections.defaultdict(list)
for f in sorted(glob.glob(f"{R}/jobs/*__consolidator-*__dp0__s0.json")):
    j = json.load(open(f))
    groups[(j["task"], j["config"])].append(j)
cmds = []
for (task, config), js in sorted(groups.items()):
    js.sort(key=lambda j: j["lr"])
    best = None
    for j in js:
        r = json.load(open(j["result"]))
        if best is None or r["val_acc"] > best[1]:
            best = (j, r["val_acc"])
    print(task, config, "lr", best[0]["lr"], "val", best[1])
    prefix = best[0]["id"].rsplit("__dp0__", 1)[0]
    for f in sorted(glob.glob(f"{R}/held/{task}__*.json")):
        j = json.load(open(f))
        if j["config"] != config:
            continue
        if j["id"].startswith(prefix + "__"):
            dst = f"{R}/jobs/{os.path.basename(f)}"
            os.rename(f, dst)
            cmds.append(f"'{os.getcwd()}/bin/consolidator' suite --job '{os.getcwd()}/{dst}'")
open(f"{R}/commands-stage2.txt", "w").write("".join(c + "\n" for c in cmds))
