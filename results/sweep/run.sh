#!/bin/bash
# The budget sweep as run for issue 17: 20 epochs, two local workers (xargs -P 2), one thread each.
# Consolidator settings are chosen in two stages: lr on dp = 0, then dp in {0.2, 0.5, 0.8} at that lr.
# Run on 2026-11-30 from a directory holding bin/consolidator (the release build of commit 933e6f1,
# whose code is that of bd029ac) and data/ (the repository's data/ at bd029ac); paths below are
# relative to it. It took 83 minutes on the project's 2-vCPU machine (timing.txt).
set -u
cd .
export CONSOLIDATOR_THREADS=1
B=./bin/consolidator
R=run20
T=timing20.txt
CONFIGS=linear,bitfit,ssf,full,lora-r1,lora-r4,lora-r8,adapter-d2,adapter-d4,adapter-d8,vpt-p1,vpt-p5,vpt-p10,consolidator-g32,consolidator-g16,consolidator-g8,consolidator-g8+16+32,consolidator-g8+16+32r
echo "plan $(date -u +%FT%TZ)" >> $T
$B suite --plan $R --epochs 20 --eval-every 10 --seeds 3 --configs "$CONFIGS" --data-dir data --backbone data/backbone.safetensors > plan.log 2>&1 || exit 1
mkdir -p $R/held
mv $R/jobs/*__consolidator-*__dp0.[258]__s0.json $R/held/
# stage 1: consolidator dp = 0 jobs first (they gate stage 2), then everything else
ls $R/jobs/*.json | sort -t_ -k3 | awk '/consolidator/{print > "c1"; next} {print > "c2"}'
cat c1 c2 | sed "s|.*|'$PWD/bin/consolidator' suite --job '$PWD/&'|" > $R/commands-stage1.txt
rm -f c1 c2
echo "stage1 start $(date -u +%FT%TZ) $(wc -l < $R/commands-stage1.txt) jobs" >> $T
xargs -P 2 -I{} sh -c '{} --no-progress' < $R/commands-stage1.txt > stage1.log 2>&1
echo "stage1 end $(date -u +%FT%TZ)" >> $T
python3 stage2.py $R > stage2-plan.log || exit 1
echo "stage2 start $(date -u +%FT%TZ) $(wc -l < $R/commands-stage2.txt) jobs" >> $T
xargs -P 2 -I{} sh -c '{} --no-progress' < $R/commands-stage2.txt > stage2.log 2>&1
echo "stage2 end $(date -u +%FT%TZ)" >> $T
$B suite --gather $R > gather1.log 2>&1
echo "seeds start $(date -u +%FT%TZ) $(wc -l < $R/commands-seeds.txt) jobs" >> $T
xargs -P 2 -I{} sh -c '{} --no-progress' < $R/commands-seeds.txt > seeds.log 2>&1
echo "seeds end $(date -u +%FT%TZ)" >> $T
$B suite --gather $R > gather2.log 2>&1
echo "done $(date -u +%FT%TZ)" >> $T
