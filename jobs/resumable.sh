#!/usr/bin/env bash
# Run a trainer so that a scheduler's warning stops it cleanly and the job comes back.
#
#   jobs/resumable.sh STOP_FILE 'REQUEUE COMMAND' -- python train_gan.py ... --stop_file STOP_FILE
#
# On SIGUSR1 or SIGTERM (SLURM's --signal=B:USR1@N, PBS's walltime TERM) this script creates
# STOP_FILE. The trainers look for it (--stop_file), finish the step, write a checkpoint that
# resumes mid-epoch and exit with code 75; on every node of a multi-node job, since the file
# is on the shared disk. Then REQUEUE COMMAND runs (scontrol requeue, qsub ...), and the job,
# started again with --resume auto, carries on where it stopped. Any other exit code (0 done,
# 2 bad input, 3 diverged, ...) is the job's, with no requeue.
set -u
if [ $# -lt 3 ]; then
  echo "usage: jobs/resumable.sh STOP_FILE 'REQUEUE COMMAND' -- TRAINER COMMAND ..." >&2
  exit 2
fi
stop_file=$1
requeue=$2
shift 2
[ "${1:-}" = "--" ] && shift
mkdir -p "$(dirname "$stop_file")"
rm -f "$stop_file"

# the trap comes first: a warning that arrives while the trainer starts must not kill this shell
trap 'echo "resumable.sh: scheduler warning, asking the trainer to stop"; touch "$stop_file"' USR1 TERM
"$@" &
pid=$!

code=0
wait "$pid" || code=$?
while kill -0 "$pid" 2>/dev/null; do  # a trap ends `wait` early: wait for the trainer itself
  code=0
  wait "$pid" || code=$?
done

# 75: stopped with a checkpoint. torchrun reports its workers' 75 as a failure of its own,
# so a non-zero code after we asked for the stop counts too.
if [ "$code" -eq 75 ] || { [ -e "$stop_file" ] && [ "$code" -ne 0 ]; }; then
  echo "resumable.sh: stopped with a checkpoint (code $code): $requeue"
  rm -f "$stop_file"
  if ! eval "$requeue"; then
    echo "resumable.sh: the requeue command failed; submit the job again to resume" >&2
    exit 75
  fi
  exit 0
fi
rm -f "$stop_file"
exit "$code"
