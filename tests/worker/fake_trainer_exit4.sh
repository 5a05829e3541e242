#!/bin/bash
# A fake tern-trainer that starts, reports one step, logs why it fails and exits with code 4
# (kTrainerCommFailure in common/trainer_protocol.h), like a rank whose peer died. Its log has
# bytes that are not UTF-8 (a crashing process prints anything): its tail must still arrive.
job="" rank=0 gen=0
while [ $# -gt 0 ]; do
  case "$1" in
    --job) job="$2"; shift 2 ;;
    --rank) rank="$2"; shift 2 ;;
    --generation) gen="$2"; shift 2 ;;
    *) shift ;;
  esac
done
t=$(date +%s.%N)
echo "{\"event\": \"started\", \"job\": \"$job\", \"rank\": $rank, \"generation\": $gen, \"time\": $t, \"world\": 1, \"pid\": $$}"
echo "{\"event\": \"progress\", \"job\": \"$job\", \"rank\": $rank, \"generation\": $gen, \"time\": $t, \"step\": 1, \"total_steps\": 10, \"epoch\": 0.1, \"loss\": 2.3, \"samples_per_s\": 10.0, \"bytes_sent\": 0}"
echo "rendezvous ok" >&2
printf 'binary garbage \xff\xfe\xc0 before the end\n' >&2
echo "peer 1 closed the connection during allreduce" >&2
exit 4
