#!/usr/bin/env bash
# The SEEL paper's own driver (its appendix: Listing 1, run_federation, and Listing 2, the sweep),
# re-created on the built-in engine as the baseline for bench/controller.py.
#
#   bench/paper_driver.sh WORKDIR PYTHON [LIMIT] [AGG_PORT PARTY0_PORT PARTY1_PORT]
#
# WORKDIR   gets copies of sweeps/configs/builtin/*.yml (with the ports below written in) and log.csv
# PYTHON    the interpreter that has seel installed
# LIMIT     stop after this many trials of the 75 (0 or absent: all of them)
# PORTS     the aggregator's and the parties' ports (default 5000 8085 8086, as shipped)
#
# As in the listings: one tmux session per process, every command typed with `tmux send-keys`,
# `tmux capture-pane -p` polled with `sleep 1` until each marker shows, `sed -i` on the aggregator
# config between trials, and a "party, loss, accuracy, precision" line per party in log.csv.
# Differences the built-in engine needs: it prints "... start successful" where IBM FL prints
# "Running on"; each trial gets fresh sessions (and kills them afterwards) so that no marker of the
# previous trial is still on screen; the panes are wide enough that the metrics line does not wrap.
# The tmux server runs on its own socket (seel-paper-<pid>) and is killed on exit.

set -euo pipefail
export LC_ALL=C

if [[ $# -lt 2 ]]; then
    echo "usage: $0 WORKDIR PYTHON [LIMIT] [AGG_PORT PARTY0_PORT PARTY1_PORT]" >&2
    exit 2
fi
WORK=$1
PYTHON=$2
LIMIT=${3:-0}
AGG_PORT=${4:-5000}
PARTY0_PORT=${5:-8085}
PARTY1_PORT=${6:-8086}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SHIPPED=$HERE/../sweeps/configs/builtin
SOCKET=seel-paper-$$

tmux_() { tmux -L "$SOCKET" "$@"; }
cleanup() {
    tmux_ kill-server 2>/dev/null || true
    rm -f "${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)/$SOCKET"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

mkdir -p "$WORK"
cd "$WORK"
cp "$SHIPPED/config_agg.yml" "$SHIPPED/config_party0.yml" "$SHIPPED/config_party1.yml" .
CONFIG_AGG=$WORK/config_agg.yml
# aggregator: connection.info.port (4 spaces); parties: aggregator.port (2) and connection.info.port (4)
sed -i "s/^    port: .*/    port: $AGG_PORT/" config_agg.yml
sed -i "s/^  port: .*/  port: $AGG_PORT/; s/^    port: .*/    port: $PARTY0_PORT/" config_party0.yml
sed -i "s/^  port: .*/  port: $AGG_PORT/; s/^    port: .*/    port: $PARTY1_PORT/" config_party1.yml

fl_agg="$(printf %q "$PYTHON") -m seel.fl.aggregator $(printf %q "$CONFIG_AGG")"
fl_party0="$(printf %q "$PYTHON") -m seel.fl.party $(printf %q "$WORK/config_party0.yml")"
fl_party1="$(printf %q "$PYTHON") -m seel.fl.party $(printf %q "$WORK/config_party1.yml")"

new_session() {
    tmux_ new-session -d -s "$1" -x 1000 -y 50 -c "$WORK" "bash --norc --noprofile"
}

# Listing 1: launch the federation with the current configuration file.
run_federation() {
    # Create a new TMUX session named 'Aggregator' with one pane
    new_session Aggregator
    tmux_ send-keys -t Aggregator:0 "$fl_agg" Enter
    # Wait until initialization completes in the pane
    while [[ $(tmux_ capture-pane -p -t Aggregator:0) != *"Aggregator initialization successful"* ]]; do
        sleep 1
    done

    # Start the pane and wait until 'Aggregator start successful' appears
    tmux_ send-keys -t Aggregator:0 "START" Enter
    while [[ $(tmux_ capture-pane -p -t Aggregator:0) != *"Aggregator start successful"* ]]; do
        sleep 1
    done

    # Create two new TMUX sessions named 'Party0' and 'Party1' with one pane each
    new_session Party0
    new_session Party1
    tmux_ send-keys -t Party0:0 "$fl_party0" Enter
    tmux_ send-keys -t Party1:0 "$fl_party1" Enter
    # Wait until initialization completes in each pane
    while [[ $(tmux_ capture-pane -p -t Party0:0) != *"Party initialization successful"* ]]; do
        sleep 1
    done
    while [[ $(tmux_ capture-pane -p -t Party1:0) != *"Party initialization successful"* ]]; do
        sleep 1
    done
    # Start each pane in 'Party0' and 'Party1' sessions and wait until 'Party start successful' appears
    tmux_ send-keys -t Party0:0 "START" Enter
    while [[ $(tmux_ capture-pane -p -t Party0:0) != *"Party start successful"* ]]; do
        sleep 1
    done
    tmux_ send-keys -t Party1:0 "START" Enter
    while [[ $(tmux_ capture-pane -p -t Party1:0) != *"Party start successful"* ]]; do
        sleep 1
    done
    # Send 'REGISTER' in panes of 'Party0' and 'Party1' sessions and wait until 'Registration Successful'
    tmux_ send-keys -t Party0:0 "REGISTER" Enter
    while [[ $(tmux_ capture-pane -p -t Party0:0) != *"Registration Successful"* ]]; do
        sleep 1
    done
    tmux_ send-keys -t Party1:0 "REGISTER" Enter
    while [[ $(tmux_ capture-pane -p -t Party1:0) != *"Registration Successful"* ]]; do
        sleep 1
    done
    # Send 'TRAIN' in pane of 'Aggregator' session and wait until 'Finished Global Training'
    tmux_ send-keys -t Aggregator:0 "TRAIN" Enter
    while [[ $(tmux_ capture-pane -p -t Aggregator:0) != *"Finished Global Training"* ]]; do
        sleep 1
    done
    # Send 'EVAL' in pane of 'Aggregator' session and wait until 'Finished eval requests'
    tmux_ send-keys -t Aggregator:0 "EVAL" Enter
    while [[ $(tmux_ capture-pane -p -t Aggregator:0) != *"Finished eval requests"* ]]; do
        sleep 1
    done
    # Send 'STOP' in all 3 panes
    tmux_ send-keys -t Aggregator:0 "STOP" Enter
    tmux_ send-keys -t Party0:0 "STOP" Enter
    tmux_ send-keys -t Party1:0 "STOP" Enter
}

# metric NAME OUTPUT: the first value of 'NAME' in a party's metrics dict (Listing 2's awk pipeline)
metric() {
    echo "$2" |
        awk -F "'$1': " 'NF>1{print $2}' |
        awk -F "," 'NF>1{print $1}' |
        head -1
}

# Listing 2: iterate through the hyperparameters and call run_federation.
# Hyperparameters being tested: max_timeout, rounds, termination_accuracy

if [ ! -f "log.csv" ]; then
    touch log.csv
    # Header for log file (Party, Loss, Accuracy, Precision)
    echo "Party, Loss, Accuracy, Precision" >> log.csv
fi

spaces="    "
trial=0

# max_timeout ranges from 0 to 200
for max_timeout in {0..200..50}
do
    for rounds in {2..4}
    do
        for termination_accuracy in $(seq 0.95 0.01 0.99)
        do
            if (( LIMIT > 0 && trial >= LIMIT )); then
                break 3
            fi
            trial=$((trial + 1))
            echo "trial $trial: max_timeout=$max_timeout rounds=$rounds termination_accuracy=$termination_accuracy" >&2
            sed -i \
                "s/^ *max_timeout: .*/${spaces}max_timeout: $max_timeout/" \
                "$CONFIG_AGG"
            sed -i \
                "s/^ *rounds: .*/${spaces}rounds: $rounds/" \
                "$CONFIG_AGG"
            sed -i \
                "s/^ *termination_accuracy: .*/${spaces}termination_accuracy: $termination_accuracy/" \
                "$CONFIG_AGG"

            run_federation

            while [[ $(tmux_ capture-pane -p -t Party0:0) != *"STOP request"* ]]; do
                sleep 1
            done
            while [[ $(tmux_ capture-pane -p -t Party1:0) != *"STOP request"* ]]; do
                sleep 1
            done

            for party in 0 1
            do
                output=$(
                    tmux_ capture-pane -p -t "Party$party"
                )
                loss=$(metric loss "$output")
                accuracy=$(metric acc "$output")
                precision=$(metric "precision weighted" "$output")
                echo "$party, $loss, $accuracy, $precision" >> log.csv
            done

            tmux_ kill-session -t Aggregator
            tmux_ kill-session -t Party0
            tmux_ kill-session -t Party1
        done
    done
done
