# Sourced by jobs/cpu_results.sh and jobs/cpu_ablation.sh (with OUT set): one step of a
# resumable job.
#
# step NAME COMMAND...: run COMMAND unless OUT/NAME.json is there; its stdout goes to
# OUT/NAME.out, its stderr to OUT/NAME.log, and its last stdout line (the script's final JSON)
# to OUT/NAME.json, which marks the step done: written whole or not at all.
step() {
    local name=$1; shift
    if [ -s "$OUT/$name.json" ]; then return 0; fi
    echo "$(date '+%H:%M:%S') $name" >&2
    "$@" > "$OUT/$name.out" 2> "$OUT/$name.log"
    tail -n 1 "$OUT/$name.out" > "$OUT/$name.json.tmp"
    mv "$OUT/$name.json.tmp" "$OUT/$name.json"
}
